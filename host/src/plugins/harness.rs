//! Drive an agent through a call without SIP, media or a model: for the host's tests, for
//! benchmarks, and for agent authors' own unit tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchboard::plugins::harness::Harness;
//! use switchboard::domain::Action;
//!
//! let harness = Harness::load("target/wasm32-wasip2/release/menu.wasm", "agent.toml").await?;
//! let mut call = harness.call("+15550100001", "1000").await?;
//! call.start().await?;
//! assert!(call.dtmf("#").await?.contains(&Action::Hangup));
//! call.end(switchboard::domain::EndReason::CallerHangup).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::routing::display_number;
use super::runtime::{AgentSettings, AgentVersion, AgentsConfig, Runtime, test_call_info};
use super::session::{AgentSession, StartOutcome, ToolOutcome};
use crate::domain::{Action, AgentFault, CallInfo, EndReason, Role};

/// A loaded agent version with a private runtime (its kv data lives in a temporary folder
/// unless [`Harness::with_runtime`] is used).
pub struct Harness {
    runtime: Arc<Runtime>,
    version: Arc<AgentVersion>,
    calls: AtomicU64,
    _data: Option<tempfile::TempDir>,
}

/// One step of a scripted call, and what the agent did in reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Dtmf(String),
    Transcript(Role, String),
    ToolCall {
        name: String,
        arguments: String,
    },
    TransferResult {
        target: String,
        outcome: Result<(), String>,
    },
}

impl Harness {
    /// Load `wasm` with its manifest into a fresh runtime with default limits.
    pub async fn load(
        wasm: impl AsRef<Path>,
        manifest: impl AsRef<Path>,
    ) -> anyhow::Result<Harness> {
        Self::load_with(wasm, manifest, AgentsConfig::default(), BTreeMap::new()).await
    }

    /// Like [`Harness::load`] with explicit limits and per-agent settings.
    pub async fn load_with(
        wasm: impl AsRef<Path>,
        manifest: impl AsRef<Path>,
        config: AgentsConfig,
        settings: BTreeMap<String, AgentSettings>,
    ) -> anyhow::Result<Harness> {
        let data = tempfile::tempdir()?;
        let config = AgentsConfig {
            // A small pool: harnesses are many and short-lived.
            max_instances: config.max_instances.min(64),
            ..config
        };
        let runtime = Runtime::new(config, settings, data.path())?;
        let mut h = Self::with_runtime(runtime, wasm, manifest).await?;
        h._data = Some(data);
        Ok(h)
    }

    /// Load into an existing runtime (shared engine, kv and limits).
    pub async fn with_runtime(
        runtime: Arc<Runtime>,
        wasm: impl AsRef<Path>,
        manifest: impl AsRef<Path>,
    ) -> anyhow::Result<Harness> {
        let version = runtime.load(wasm.as_ref(), manifest.as_ref()).await?;
        Ok(Harness {
            runtime,
            version: Arc::new(version),
            calls: AtomicU64::new(0),
            _data: None,
        })
    }

    pub fn version(&self) -> &Arc<AgentVersion> {
        &self.version
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A new inbound call from `caller` to `callee`, not yet started.
    pub async fn call(&self, caller: &str, callee: &str) -> Result<HarnessCall, AgentFault> {
        let call_id = format!("harness-{}", self.calls.fetch_add(1, Ordering::Relaxed));
        let info = test_call_info(&call_id, &display_number(caller), &display_number(callee));
        self.call_with(info).await
    }

    /// A new call with a full `call-info`.
    pub async fn call_with(&self, info: CallInfo) -> Result<HarnessCall, AgentFault> {
        let session = self.runtime.session(&self.version, &info.call_id).await?;
        Ok(HarnessCall {
            session,
            info,
            log: Vec::new(),
        })
    }

    /// Path of the loaded wasm file.
    pub fn wasm_path(&self) -> PathBuf {
        self.version.wasm_path.clone()
    }
}

/// A call in progress under the harness. Every step's actions are also kept in [`HarnessCall::log`].
pub struct HarnessCall {
    pub session: AgentSession,
    info: CallInfo,
    log: Vec<(String, Vec<Action>)>,
}

impl HarnessCall {
    /// on-start with this call's info.
    pub async fn start(&mut self) -> Result<StartOutcome, AgentFault> {
        let outcome = self.session.start(&self.info).await?;
        if let StartOutcome::Accept { actions, .. } = &outcome {
            self.log.push(("on-start".into(), actions.clone()));
        }
        Ok(outcome)
    }

    pub async fn dtmf(&mut self, digits: &str) -> Result<Vec<Action>, AgentFault> {
        let actions = self.session.dtmf(digits).await?;
        self.log.push((format!("dtmf {digits}"), actions.clone()));
        Ok(actions)
    }

    pub async fn transcript(&mut self, role: Role, text: &str) -> Result<Vec<Action>, AgentFault> {
        let actions = self.session.transcript(role, text, true).await?;
        self.log
            .push((format!("transcript {text}"), actions.clone()));
        Ok(actions)
    }

    pub async fn tool_call(
        &mut self,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutcome, AgentFault> {
        let outcome = self.session.tool_call(name, arguments).await?;
        self.log
            .push((format!("tool {name}"), outcome.actions.clone()));
        Ok(outcome)
    }

    pub async fn transfer_result(
        &mut self,
        target: &str,
        outcome: Result<(), String>,
    ) -> Result<Vec<Action>, AgentFault> {
        let actions = self.session.transfer_result(target, outcome).await?;
        self.log
            .push((format!("transfer-result {target}"), actions.clone()));
        Ok(actions)
    }

    pub async fn end(&mut self, reason: EndReason) -> Result<(), AgentFault> {
        self.session.end(&reason).await
    }

    /// Run a script after on-start; returns each step's actions (or the fault that ended it).
    pub async fn run(&mut self, steps: &[Step]) -> Vec<Result<Vec<Action>, AgentFault>> {
        let mut out = Vec::new();
        for step in steps {
            let r = match step {
                Step::Dtmf(d) => self.dtmf(d).await,
                Step::Transcript(role, text) => self.transcript(*role, text).await,
                Step::ToolCall { name, arguments } => {
                    self.tool_call(name, arguments).await.map(|o| o.actions)
                }
                Step::TransferResult { target, outcome } => {
                    self.transfer_result(target, outcome.clone()).await
                }
            };
            out.push(r);
        }
        out
    }

    /// Every step so far with the actions it produced.
    pub fn log(&self) -> &[(String, Vec<Action>)] {
        &self.log
    }
}
