//! The sandbox of one call: its own `Store` (memory cap, empty WASI context, CPU budget per
//! hook, wall-clock timeout), the instance in it, and the rules that turn a failed or
//! malformed hook into an [`AgentFault`] that poisons the sandbox. Other sandboxes are never
//! affected.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_2::switchboard::agent::types as wit;
use super::contract::{Agent, AgentPre, call_hook};
use super::cpu::CpuMeter;
use super::host::HostCtx;
use super::limiter::Limiter;
use super::runtime::{AgentContext, SessionLimits};
use super::types::AgentInfo;
use super::validate::{caps, check_action, check_info};
use crate::domain::agent_event::AgentRequest;
use crate::domain::{Action, AgentFault, FaultKind};

/// The data of one session's `Store`.
pub struct SessionState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    pub(crate) host: HostCtx,
    /// A hook (or the instantiation) is running.
    in_hook: bool,
    /// The guest's CPU time in the current hook.
    pub(crate) cpu: Arc<CpuMeter>,
    budget: Duration,
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
    /// The current hook's CPU time is past the budget.
    fn over_budget(&self) -> bool {
        self.in_hook && self.cpu.used() > self.budget
    }
}

/// The instance and store of one call, and the fault that poisoned them, if any.
pub(crate) struct Sandbox {
    pub store: Store<SessionState>,
    pub agent: Agent,
    pub limits: SessionLimits,
    pub fault: Option<AgentFault>,
    /// Requests of completed hooks the call has not taken yet.
    pub requests: Vec<AgentRequest>,
}

pub(crate) type HookResult<R> = Result<wasmtime::Result<R>, tokio::time::error::Elapsed>;

impl Sandbox {
    pub async fn new(
        engine: &Engine,
        pre: &AgentPre,
        ctx: Arc<AgentContext>,
        limits: SessionLimits,
        call_id: String,
    ) -> Result<Sandbox, AgentFault> {
        let state = SessionState {
            // Empty context: no preopened folders, environment or arguments; TCP, UDP and name
            // lookup are off and every socket address is refused (wasmtime-wasi's defaults),
            // so an interpreter's `open` or `connect` fails in the guest.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes),
            host: HostCtx::new(ctx, call_id),
            // Instantiation runs start functions: it is under the budget like a hook.
            in_hook: true,
            cpu: Arc::default(),
            budget: limits.hook_budget,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to tokio at every tick; interrupt once the hook's CPU budget is spent.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().over_budget() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let cpu = store.data().cpu.clone();
        let instantiate = cpu.metered(pre.instantiate(&mut store));
        let result = tokio::time::timeout(limits.hook_timeout, instantiate).await;
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
        store.data_mut().in_hook = false;
        Ok(Sandbox {
            store,
            agent,
            limits,
            fault: None,
            requests: Vec::new(),
        })
    }

    pub fn state(&self) -> &SessionState {
        self.store.data()
    }

    pub fn begin(&mut self, hook: &'static str) -> Result<(), AgentFault> {
        if let Some(f) = &self.fault {
            return Err(AgentFault {
                kind: FaultKind::Poisoned,
                hook,
                message: format!("the agent already failed in {}: {}", f.hook, f.message),
            });
        }
        let state = self.store.data_mut();
        state.host.begin_hook(hook);
        state.cpu.reset();
        state.in_hook = true;
        Ok(())
    }

    /// Close a hook: classify errors (poisoning the sandbox) and hand back the queued effects.
    /// The hook's other requests wait for the call in `requests`; a failed hook's are dropped
    /// with its effects.
    pub fn finish<R>(
        &mut self,
        hook: &'static str,
        result: HookResult<R>,
    ) -> Result<(R, Vec<Action>), AgentFault> {
        let state = self.store.data_mut();
        state.in_hook = false;
        let effects = std::mem::take(&mut state.host.effects);
        let requests = std::mem::take(&mut state.host.requests);
        let fault = match result {
            Ok(Ok(value)) => {
                self.requests.extend(requests);
                return Ok((value, effects));
            }
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
        let host = &self.store.data().host;
        tracing::warn!(
            call_id = %host.call_id, agent = %host.ctx.name, version = %host.ctx.version,
            hook = fault.hook, kind = ?fault.kind, error = %fault.message,
            "agent failed; its part of the call ends"
        );
        self.fault = Some(fault);
    }

    /// Reject a malformed result: the agent broke the contract.
    pub fn limit(&mut self, hook: &'static str, message: String) -> AgentFault {
        let fault = AgentFault {
            kind: FaultKind::Limit,
            hook,
            message,
        };
        self.poison(fault.clone());
        fault
    }

    pub async fn describe(&mut self) -> Result<AgentInfo, AgentFault> {
        self.begin("describe")?;
        let r = call_hook!(self, call_describe());
        let (info, _) = self.finish("describe", r)?;
        check_info(&info).map_err(|m| self.limit("describe", m))?;
        Ok(info)
    }

    /// Effects and returned actions, in order, with the size and transfer rules applied.
    pub fn merge(
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
                && !self.store.data().host.ctx.manifest.allows_transfer(target)
            {
                let host = &self.store.data().host;
                tracing::warn!(call_id = %host.call_id, agent = %host.ctx.name, %target,
                    "dropping a transfer to a target the manifest does not allow");
                continue;
            }
            effects.push(action);
        }
        Ok(effects)
    }
}

fn classify(store: &Store<SessionState>, hook: &'static str, e: &wasmtime::Error) -> AgentFault {
    let state = store.data();
    let kind = if state.limiter.refused {
        FaultKind::Memory
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FaultKind::CpuBudget
    } else {
        FaultKind::Trap
    };
    let message = match kind {
        FaultKind::Memory => format!("memory cap of {} bytes reached", state.limiter.memory_bytes),
        FaultKind::CpuBudget => format!("ran past its CPU budget of {:?}", state.budget),
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
