//! One agent instance for one call: its own `Store` (memory cap, empty WASI context, CPU budget
//! per hook, wall-clock timeout), the host imports it may use, and the hooks the call drives.
//!
//! A hook that traps, overruns its budget or breaks a size cap poisons the session: it returns
//! an [`AgentFault`] and no further hook is entered. Other sessions are never affected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::switchboard::agent::types as wit;
use super::bindings::switchboard::agent::{call, config, http, kv, log};
use super::bindings::{AgentPlugin, AgentPluginPre};
use super::http::{FetchError, FetchRequest};
use super::runtime::{AgentContext, AgentVersion, SessionLimits};
use super::types::{AgentInfo, Error as GuestError, LogLevel};
use crate::domain::{
    Action, AgentFault, CallInfo, EndReason, FaultKind, RejectReason, Role, SessionConfig,
};

/// Caps on what crosses the boundary (documented in wit/agent.wit).
pub mod caps {
    pub const MAX_ACTIONS: usize = 32;
    pub const MAX_TEXT: usize = 4 << 10;
    pub const MAX_INSTRUCTIONS: usize = 32 << 10;
    pub const MAX_TOOLS: usize = 64;
    pub const MAX_TOOL_NAME: usize = 64;
    pub const MAX_TOOL_DESCRIPTION: usize = 1 << 10;
    pub const MAX_TOOL_PARAMETERS: usize = 16 << 10;
    pub const MAX_TOOL_IO: usize = 64 << 10;
    pub const MAX_DTMF: usize = 64;
    pub const MAX_LOG: usize = 4 << 10;
    pub const MAX_INFO_FIELD: usize = 4 << 10;
    /// Call metadata (JSON text) handed to on-start.
    pub const MAX_METADATA: usize = 16 << 10;
    pub const MAX_NUMBERS: usize = 256;
}

/// Host-side limiter: caps linear memory and remembers that a growth was refused, so the
/// resulting trap is reported as a memory fault.
struct Limiter {
    memory_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Measures guest CPU time within one hook: wall time minus time spent in host imports.
#[derive(Default)]
struct HookClock {
    started: Option<Instant>,
    in_host: Duration,
    budget: Duration,
}

impl HookClock {
    fn over_budget(&self) -> bool {
        self.started
            .is_some_and(|t| t.elapsed().saturating_sub(self.in_host) > self.budget)
    }
}

/// The data of one session's `Store`.
pub struct SessionState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    ctx: Arc<AgentContext>,
    call_id: String,
    /// Effects requested through the `call` interface during the current hook.
    effects: Vec<Action>,
    clock: HookClock,
}

impl WasiView for SessionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl SessionState {
    fn queue(&mut self, action: Action) -> Result<(), GuestError> {
        if self.effects.len() >= caps::MAX_ACTIONS {
            return Err(GuestError::Invalid(format!(
                "more than {} effects in one hook",
                caps::MAX_ACTIONS
            )));
        }
        self.effects.push(action);
        Ok(())
    }

    fn check_text(text: &str) -> Result<(), GuestError> {
        if text.len() > caps::MAX_TEXT {
            return Err(GuestError::Invalid(format!(
                "text is over {} bytes",
                caps::MAX_TEXT
            )));
        }
        Ok(())
    }
}

fn valid_dtmf(digits: &str) -> bool {
    !digits.is_empty()
        && digits.len() <= caps::MAX_DTMF
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | ','))
}

impl super::bindings::switchboard::agent::types::Host for SessionState {}

impl call::Host for SessionState {
    async fn say(&mut self, text: String) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(Self::check_text(&text).and_then(|_| self.queue(Action::Say(text))))
    }

    async fn play(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(Self::check_text(&name).and_then(|_| self.queue(Action::Play(name))))
    }

    async fn hangup(&mut self) -> wasmtime::Result<()> {
        // Over the cap the hang-up is still honoured: it replaces the last queued effect.
        if self.queue(Action::Hangup).is_err() {
            *self.effects.last_mut().expect("queue is full") = Action::Hangup;
        }
        Ok(())
    }

    async fn transfer(&mut self, target: String) -> wasmtime::Result<Result<(), GuestError>> {
        if !self.ctx.manifest.allows_transfer(&target) {
            return Ok(Err(GuestError::NotAllowed(format!(
                "transfer target `{target}` is not in the manifest's [capabilities] transfer list"
            ))));
        }
        Ok(self.queue(Action::Transfer(target)))
    }

    async fn send_dtmf(&mut self, digits: String) -> wasmtime::Result<Result<(), GuestError>> {
        if !valid_dtmf(&digits) {
            return Ok(Err(GuestError::Invalid(format!(
                "`{digits}` is not a DTMF string (0-9 * # A-D and `,`, at most {})",
                caps::MAX_DTMF
            ))));
        }
        Ok(self.queue(Action::SendDtmf(digits)))
    }
}

impl kv::Host for SessionState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.ctx.kv.as_ref().and_then(|kv| kv.get(&key)))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let Some(store) = self.ctx.kv.clone() else {
            return Ok(Err(GuestError::NotAllowed("no kv quota granted".into())));
        };
        let t = Instant::now();
        let quota = self.ctx.manifest.capabilities.kv_quota_bytes;
        let result = store.set(&key, &value, quota);
        self.clock.in_host += t.elapsed();
        Ok(result.map_err(|e| match e {
            super::kv::KvError::Quota { .. } => GuestError::NotAllowed(e.to_string()),
            super::kv::KvError::BadKey | super::kv::KvError::ValueTooLarge => {
                GuestError::Invalid(e.to_string())
            }
            other => {
                tracing::error!(call_id = %self.call_id, agent = %self.ctx.name, error = %other, "kv write failed");
                GuestError::Unavailable("storage failed".into())
            }
        }))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if let Some(store) = &self.ctx.kv {
            let t = Instant::now();
            if let Err(e) = store.delete(&key) {
                tracing::error!(call_id = %self.call_id, agent = %self.ctx.name, error = %e, "kv delete failed");
            }
            self.clock.in_host += t.elapsed();
        }
        Ok(())
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .ctx
            .kv
            .as_ref()
            .map(|kv| kv.list_keys(&prefix))
            .unwrap_or_default())
    }
}

impl http::Host for SessionState {
    async fn fetch(
        &mut self,
        req: http::Request,
    ) -> wasmtime::Result<Result<http::Response, GuestError>> {
        let t = Instant::now();
        let ctx = self.ctx.clone();
        let result = ctx
            .http
            .fetch(
                FetchRequest {
                    method: req.method,
                    url: req.url,
                    headers: req.headers,
                    body: req.body,
                },
                &ctx.manifest.capabilities.http,
            )
            .await;
        self.clock.in_host += t.elapsed();
        Ok(match result {
            Ok(r) => Ok(http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(FetchError::NotAllowed(m)) => Err(GuestError::NotAllowed(m)),
            Err(FetchError::Invalid(m)) => Err(GuestError::Invalid(m)),
            Err(FetchError::Unavailable(m)) => Err(GuestError::Unavailable(m)),
        })
    }
}

impl config::Host for SessionState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.values.get(&key).cloned())
    }
}

impl log::Host for SessionState {
    async fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        if message.len() > caps::MAX_LOG {
            let mut cut = caps::MAX_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (call_id, agent, version) = (&self.call_id, &self.ctx.name, &self.ctx.version);
        match level {
            LogLevel::Trace => tracing::trace!(%call_id, %agent, %version, "{message}"),
            LogLevel::Debug => tracing::debug!(%call_id, %agent, %version, "{message}"),
            LogLevel::Info => tracing::info!(%call_id, %agent, %version, "{message}"),
            LogLevel::Warn => tracing::warn!(%call_id, %agent, %version, "{message}"),
            LogLevel::Error => tracing::error!(%call_id, %agent, %version, "{message}"),
        }
        Ok(())
    }
}

/// The instance and store of one call, and the fault that poisoned them, if any.
pub(crate) struct Sandbox {
    store: Store<SessionState>,
    agent: AgentPlugin,
    limits: SessionLimits,
    fault: Option<AgentFault>,
}

type HookResult<R> = Result<wasmtime::Result<R>, tokio::time::error::Elapsed>;

impl Sandbox {
    pub(crate) async fn new(
        engine: &Engine,
        pre: &AgentPluginPre<SessionState>,
        ctx: Arc<AgentContext>,
        limits: SessionLimits,
        call_id: String,
    ) -> Result<Sandbox, AgentFault> {
        let state = SessionState {
            // Empty context: no preopened folders, environment, arguments or sockets.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: limits.memory_bytes,
                refused: false,
            },
            ctx,
            call_id,
            effects: Vec::new(),
            clock: HookClock {
                started: Some(Instant::now()),
                in_host: Duration::ZERO,
                budget: limits.hook_budget,
            },
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to tokio at every tick; interrupt once the hook's CPU budget is spent.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().clock.over_budget() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let result =
            tokio::time::timeout(limits.hook_timeout, pre.instantiate_async(&mut store)).await;
        let agent = match result {
            Ok(Ok(agent)) => agent,
            Ok(Err(e)) => return Err(classify(&store, "instantiate", &e)),
            Err(_) => {
                return Err(AgentFault {
                    kind: FaultKind::Timeout,
                    hook: "instantiate",
                    message: format!("instantiation took over {:?}", limits.hook_timeout),
                });
            }
        };
        store.data_mut().clock.started = None;
        Ok(Sandbox {
            store,
            agent,
            limits,
            fault: None,
        })
    }

    fn begin(&mut self, hook: &'static str) -> Result<(), AgentFault> {
        if let Some(f) = &self.fault {
            return Err(AgentFault {
                kind: FaultKind::Poisoned,
                hook,
                message: format!("the agent already failed in {}: {}", f.hook, f.message),
            });
        }
        let state = self.store.data_mut();
        state.effects.clear();
        state.clock.started = Some(Instant::now());
        state.clock.in_host = Duration::ZERO;
        Ok(())
    }

    /// Close a hook: classify errors (poisoning the sandbox) and hand back the queued effects.
    fn finish<R>(
        &mut self,
        hook: &'static str,
        result: HookResult<R>,
    ) -> Result<(R, Vec<Action>), AgentFault> {
        self.store.data_mut().clock.started = None;
        let effects = std::mem::take(&mut self.store.data_mut().effects);
        let fault = match result {
            Ok(Ok(value)) => return Ok((value, effects)),
            Ok(Err(e)) => classify(&self.store, hook, &e),
            Err(_) => AgentFault {
                kind: FaultKind::Timeout,
                hook,
                message: format!("did not return within {:?}", self.limits.hook_timeout),
            },
        };
        self.poison(fault.clone());
        Err(fault)
    }

    fn poison(&mut self, fault: AgentFault) {
        let state = self.store.data();
        tracing::warn!(
            call_id = %state.call_id, agent = %state.ctx.name, version = %state.ctx.version,
            hook = fault.hook, kind = ?fault.kind, error = %fault.message,
            "agent failed; its part of the call ends"
        );
        self.fault = Some(fault);
    }

    /// Reject a malformed result: the agent broke the contract.
    fn limit(&mut self, hook: &'static str, message: String) -> AgentFault {
        let fault = AgentFault {
            kind: FaultKind::Limit,
            hook,
            message,
        };
        self.poison(fault.clone());
        fault
    }

    pub(crate) async fn describe(&mut self) -> Result<AgentInfo, AgentFault> {
        self.begin("describe")?;
        let fut = self
            .agent
            .switchboard_agent_agent()
            .call_describe(&mut self.store);
        let r = tokio::time::timeout(self.limits.hook_timeout, fut).await;
        let (info, _) = self.finish("describe", r)?;
        check_info(&info).map_err(|m| self.limit("describe", m))?;
        Ok(info)
    }

    /// Effects and returned actions, in order, with the size and transfer rules applied.
    fn merge(
        &mut self,
        hook: &'static str,
        mut effects: Vec<Action>,
        returned: Vec<wit::Action>,
    ) -> Result<Vec<Action>, AgentFault> {
        if returned.len() > caps::MAX_ACTIONS {
            return Err(self.limit(
                hook,
                format!(
                    "returned {} actions (cap {})",
                    returned.len(),
                    caps::MAX_ACTIONS
                ),
            ));
        }
        for action in returned.into_iter().map(Action::from) {
            if let Err(m) = check_action(&action) {
                return Err(self.limit(hook, m));
            }
            if let Action::Transfer(target) = &action
                && !self.store.data().ctx.manifest.allows_transfer(target)
            {
                let state = self.store.data();
                tracing::warn!(call_id = %state.call_id, agent = %state.ctx.name, %target,
                    "dropping a transfer to a target the manifest does not allow");
                continue;
            }
            effects.push(action);
        }
        Ok(effects)
    }
}

fn classify(store: &Store<SessionState>, hook: &'static str, e: &wasmtime::Error) -> AgentFault {
    let kind = if store.data().limiter.refused {
        FaultKind::Memory
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FaultKind::CpuBudget
    } else {
        FaultKind::Trap
    };
    let message = match kind {
        FaultKind::Memory => format!(
            "memory cap of {} bytes reached",
            store.data().limiter.memory_bytes
        ),
        FaultKind::CpuBudget => {
            format!("ran past its CPU budget of {:?}", store.data().clock.budget)
        }
        _ => {
            // The first line and the trap reason; the full backtrace goes to the debug log.
            tracing::debug!(error = ?e, "agent trap");
            let text = format!("{e:#}");
            text.lines().take(3).collect::<Vec<_>>().join(" ")
        }
    };
    AgentFault {
        kind,
        hook,
        message,
    }
}

fn over(field: &str, len: usize, cap: usize) -> Result<(), String> {
    if len > cap {
        return Err(format!("{field} is {len} bytes (cap {cap})"));
    }
    Ok(())
}

fn check_info(info: &AgentInfo) -> Result<(), String> {
    over("name", info.name.len(), 64)?;
    over("version", info.version.len(), 64)?;
    over("description", info.description.len(), 1 << 10)?;
    if info.numbers.len() > caps::MAX_NUMBERS {
        return Err(format!(
            "{} numbers (cap {})",
            info.numbers.len(),
            caps::MAX_NUMBERS
        ));
    }
    Ok(())
}

fn check_action(action: &Action) -> Result<(), String> {
    match action {
        Action::Say(t) | Action::Play(t) | Action::Transfer(t) => {
            over("action text", t.len(), caps::MAX_TEXT)
        }
        Action::SendDtmf(d) if !valid_dtmf(d) => Err(format!("`{d}` is not a DTMF string")),
        Action::CollectDigits(r) => {
            if !(1..=32).contains(&r.max_digits) {
                return Err(format!(
                    "collect-digits max-digits {} is not in 1..=32",
                    r.max_digits
                ));
            }
            over(
                "collect-digits prompt",
                r.prompt.as_deref().map_or(0, str::len),
                caps::MAX_TEXT,
            )
        }
        Action::SendDtmf(_) | Action::Hangup => Ok(()),
    }
}

fn check_config(c: &SessionConfig) -> Result<(), String> {
    over("instructions", c.instructions.len(), caps::MAX_INSTRUCTIONS)?;
    over(
        "greeting",
        c.greeting.as_deref().map_or(0, str::len),
        caps::MAX_TEXT,
    )?;
    for field in [&c.voice, &c.language, &c.model].into_iter().flatten() {
        over("voice/language/model", field.len(), 128)?;
    }
    if c.tools.len() > caps::MAX_TOOLS {
        return Err(format!("{} tools (cap {})", c.tools.len(), caps::MAX_TOOLS));
    }
    for tool in &c.tools {
        let name_ok = !tool.name.is_empty()
            && tool.name.len() <= caps::MAX_TOOL_NAME
            && tool
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !name_ok {
            return Err(format!(
                "tool name `{}` must be 1-64 of [a-zA-Z0-9_-]",
                tool.name
            ));
        }
        over(
            "tool description",
            tool.description.len(),
            caps::MAX_TOOL_DESCRIPTION,
        )?;
        over(
            "tool parameters",
            tool.parameters.len(),
            caps::MAX_TOOL_PARAMETERS,
        )?;
        match serde_json::from_str::<serde_json::Value>(&tool.parameters) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(format!(
                    "tool `{}` parameters are not a JSON Schema object",
                    tool.name
                ));
            }
        }
    }
    Ok(())
}

fn check_call_info(info: &CallInfo) -> Result<(), String> {
    for (field, value) in [
        ("call-id", &info.call_id),
        ("caller", &info.caller),
        ("callee", &info.callee),
        ("transport", &info.transport),
    ] {
        over(field, value.len(), caps::MAX_INFO_FIELD)?;
    }
    over("metadata", info.metadata.len(), caps::MAX_METADATA)?;
    if info.headers.len() > 64 {
        return Err(format!("{} headers (cap 64)", info.headers.len()));
    }
    Ok(())
}

/// How `on-start` went.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// Run the session with this configuration; `actions` are effects queued during on-start.
    Accept {
        config: SessionConfig,
        actions: Vec<Action>,
    },
    /// Refuse the call with this SIP status.
    Reject(RejectReason),
}

/// Result of a tool call: what goes back to the model, and effects queued meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub result: Result<String, String>,
    pub actions: Vec<Action>,
}

/// An agent instance serving one call. Hooks run one at a time; after a fault every hook
/// returns [`FaultKind::Poisoned`] and the call should apply the runtime's fallback.
pub struct AgentSession {
    sandbox: Sandbox,
    version: Arc<AgentVersion>,
    ended: bool,
}

impl AgentSession {
    pub(crate) fn new(sandbox: Sandbox, version: Arc<AgentVersion>) -> Self {
        AgentSession {
            sandbox,
            version,
            ended: false,
        }
    }

    /// The version this call runs, fixed for the whole call.
    pub fn version(&self) -> &Arc<AgentVersion> {
        &self.version
    }

    pub fn call_id(&self) -> &str {
        &self.sandbox.store.data().call_id
    }

    /// The fault that ended the agent's part of the call, if any.
    pub fn fault(&self) -> Option<&AgentFault> {
        self.sandbox.fault.as_ref()
    }

    pub async fn start(&mut self, info: &CallInfo) -> Result<StartOutcome, AgentFault> {
        check_call_info(info).map_err(|m| AgentFault {
            kind: FaultKind::Limit,
            hook: "on-start",
            message: format!("host call-info: {m}"),
        })?;
        let sb = &mut self.sandbox;
        sb.begin("on-start")?;
        let info = info.into();
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_start(&mut sb.store, &info);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (result, effects) = sb.finish("on-start", r)?;
        match result {
            Ok(config) => {
                let config = SessionConfig::from(config);
                check_config(&config).map_err(|m| sb.limit("on-start", m))?;
                let actions = sb.merge("on-start", effects, Vec::new())?;
                Ok(StartOutcome::Accept { config, actions })
            }
            Err(reject) => {
                if !(400..=699).contains(&reject.code) {
                    return Err(sb.limit(
                        "on-start",
                        format!("reject code {} is not in 400..=699", reject.code),
                    ));
                }
                over("reject reason", reject.reason.len(), 256)
                    .map_err(|m| sb.limit("on-start", m))?;
                Ok(StartOutcome::Reject(reject.into()))
            }
        }
    }

    pub async fn dtmf(&mut self, digits: &str) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-dtmf")?;
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_dtmf(&mut sb.store, digits);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (returned, effects) = sb.finish("on-dtmf", r)?;
        sb.merge("on-dtmf", effects, returned)
    }

    pub async fn transcript(
        &mut self,
        role: Role,
        text: &str,
        is_final: bool,
    ) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-transcript")?;
        let fut = sb.agent.switchboard_agent_agent().call_on_transcript(
            &mut sb.store,
            role.into(),
            text,
            is_final,
        );
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (returned, effects) = sb.finish("on-transcript", r)?;
        sb.merge("on-transcript", effects, returned)
    }

    pub async fn tool_call(
        &mut self,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutcome, AgentFault> {
        let sb = &mut self.sandbox;
        if arguments.len() > caps::MAX_TOOL_IO {
            return Ok(ToolOutcome {
                result: Err(format!("arguments are over {} bytes", caps::MAX_TOOL_IO)),
                actions: Vec::new(),
            });
        }
        sb.begin("on-tool-call")?;
        let fut =
            sb.agent
                .switchboard_agent_agent()
                .call_on_tool_call(&mut sb.store, name, arguments);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (result, effects) = sb.finish("on-tool-call", r)?;
        let len = match &result {
            Ok(s) | Err(s) => s.len(),
        };
        over("tool result", len, caps::MAX_TOOL_IO).map_err(|m| sb.limit("on-tool-call", m))?;
        let actions = sb.merge("on-tool-call", effects, Vec::new())?;
        Ok(ToolOutcome { result, actions })
    }

    pub async fn transfer_result(
        &mut self,
        target: &str,
        outcome: Result<(), String>,
    ) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-transfer-result")?;
        let fut = sb.agent.switchboard_agent_agent().call_on_transfer_result(
            &mut sb.store,
            target,
            outcome.as_ref().map(|_| ()).map_err(String::as_str),
        );
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (returned, effects) = sb.finish("on-transfer-result", r)?;
        sb.merge("on-transfer-result", effects, returned)
    }

    /// The last hook. Runs at most once; later calls, and calls after a fault, do nothing.
    pub async fn end(&mut self, reason: &EndReason) -> Result<(), AgentFault> {
        if std::mem::replace(&mut self.ended, true) || self.sandbox.fault.is_some() {
            return Ok(());
        }
        let sb = &mut self.sandbox;
        sb.begin("on-end")?;
        let reason = reason.into();
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_end(&mut sb.store, &reason);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        sb.finish("on-end", r).map(|_| ())
    }
}
