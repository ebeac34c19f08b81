//! Calls: one task per call composing the caller's leg (`sip` + `media` today, behind
//! [`leg::Leg`]), the agent (`plugins`) and the voice model (`model`). Those modules know
//! nothing of this one.
//!
//! Inbound on any leg ([`inbound`]; SIP in `sip_inbound`): route the dialled number to an agent
//! version (pinned for the call), run `on-start`, bring the leg up (SDP for SIP, the stream for
//! a bridge), connect the model, then run the call: [`logic`] decides, [`task`] carries out.
//! Every step is a timestamped [`crate::domain::events::CallEvent`].

pub(crate) mod agent;
pub mod audio;
mod brain;
pub mod digits;
pub mod events;
pub mod handoff;
pub mod inbound;
pub mod leg;
pub mod logic;
mod machine;
pub mod outbound;
mod sip_inbound;
mod sip_leg;
mod sip_outbound;
pub(crate) mod task;
#[cfg(test)]
mod test_legs;

pub use brain::LegFormat;
pub use outbound::{PlaceError, PlaceRequest};
pub use sip_inbound::spawn_incoming;
pub use sip_outbound::place;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::domain::conversation::ConversationConfig;
use crate::domain::events::{CallState, EventKind};
use crate::domain::{CallInfo, Handoff, SessionConfig};
use crate::media::amd::AmdConfig;
use crate::media::{Codec, MediaConfig, PortPool, SilenceMode};
use crate::model::{ModelProvider, ModelSession};
use crate::plugins::runtime::StartFallback;
use crate::plugins::{AgentSession, AgentVersion, Registry, StartOutcome};
use brain::Brain;
use events::{EventBus, Recorder};
use leg::Leg;
use logic::{
    CallLogic, END_CALL_TOOL, HandoffFailed, HandoffRequest, LogicConfig, McpRoute, McpRoutes,
};
use machine::MachineDetection;
use task::{CallTask, NewAgent};

/// The `[calls]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CallConfig {
    /// RTP port range (even ports for RTP, the next odd one for RTCP).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// Codec preference: "pcmu", "pcma", "g722" (16 kHz), "opus".
    pub codecs: Vec<String>,
    /// No RTP for this long ends the call.
    pub media_timeout_secs: u64,
    /// How long a hang-up or transfer waits for queued speech to finish.
    pub drain_timeout_secs: u64,
    /// Keep sending encoded silence while the agent is quiet (carriers and NATs expect a steady
    /// stream); `false` sends nothing between talkspurts.
    pub send_silence: bool,
    /// Record every call to a stereo WAV (caller left, agent right); `[agent.<name>] record`
    /// overrides this per agent.
    pub record: bool,
    /// Where recordings go; the host sets `<data-dir>/recordings` when unset.
    pub recordings_dir: Option<PathBuf>,
    /// Answering-machine detection thresholds (`[calls.amd]`, for outbound calls that ask for
    /// it); the defaults are tuned on the generated set of `tests/amd`.
    pub amd: AmdConfig,
    /// Caller silence, the maximum call length and fillers while tools run
    /// (`[calls.conversation]`; `[agent.<name>.conversation]` replaces it for an agent).
    pub conversation: ConversationConfig,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            rtp_port_min: 20000,
            rtp_port_max: 30000,
            codecs: vec!["pcmu".into(), "pcma".into(), "opus".into()],
            media_timeout_secs: 30,
            drain_timeout_secs: 30,
            send_silence: true,
            record: false,
            recordings_dir: None,
            amd: AmdConfig::default(),
            conversation: ConversationConfig::default(),
        }
    }
}

impl CallConfig {
    pub fn codec_list(&self) -> anyhow::Result<Vec<Codec>> {
        self.codecs
            .iter()
            .map(|c| {
                c.parse::<Codec>()
                    .map_err(|e| anyhow::anyhow!("[calls] codecs: {e}"))
            })
            .collect()
    }

    /// How long a leg may go without media before the call ends.
    pub fn media_timeout(&self) -> Duration {
        Duration::from_secs(self.media_timeout_secs)
    }
}

/// Requests from the API (and a draining node) to a running call.
#[derive(Debug)]
pub enum CallCommand {
    Hangup,
    Transfer(String),
    /// Say this, then hang up once it was heard (a draining node's last word).
    Goodbye(String),
    /// The caller cancelled before answer.
    Cancelled,
}

/// A live call as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub id: String,
    pub sip_call_id: String,
    pub direction: String,
    pub caller: String,
    pub callee: String,
    /// The leg ("udp", "twilio", "openai-sip", ...).
    pub transport: String,
    pub agent: Option<String>,
    pub started_at_ms: u64,
}

struct Live {
    summary: CallSummary,
    commands: mpsc::Sender<CallCommand>,
}

/// What every call task needs.
pub struct CallDeps {
    pub registry: Arc<Registry>,
    /// The provider new calls connect to (changed live: see [`CallDeps::provider`]).
    provider: watch::Receiver<Arc<dyn ModelProvider>>,
    /// Local synthesis for apologies when the model or the agent fails.
    pub fallback_provider: Arc<dyn ModelProvider>,
    pub ports: PortPool,
    pub config: CallConfig,
    pub codecs: Vec<Codec>,
    /// Address advertised in our SDP and used for RTP.
    pub media_ip: IpAddr,
    pub events: EventBus,
    live: Mutex<HashMap<String, Live>>,
    next_id: AtomicU64,
}

impl CallDeps {
    /// The provider a call starting now connects to: the latest `[model]`, live changes
    /// included; a running call keeps the one it started with.
    pub fn provider(&self) -> Arc<dyn ModelProvider> {
        self.provider.borrow().clone()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Arc<Registry>,
        provider: watch::Receiver<Arc<dyn ModelProvider>>,
        fallback_provider: Arc<dyn ModelProvider>,
        config: CallConfig,
        media_ip: IpAddr,
        events: EventBus,
    ) -> anyhow::Result<Arc<CallDeps>> {
        Ok(Arc::new(CallDeps {
            ports: PortPool::new(config.rtp_port_min, config.rtp_port_max)
                .map_err(|e| anyhow::anyhow!("[calls] rtp ports: {e}"))?,
            codecs: config.codec_list()?,
            registry,
            provider,
            fallback_provider,
            config,
            media_ip,
            events,
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }))
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new call's id (for an entry path that logs before it routes the call).
    pub fn new_call_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("c{:x}{:04x}", events::now_ms(), n & 0xffff)
    }

    pub(crate) fn forget(&self, call_id: &str) {
        self.live().remove(call_id);
    }

    /// Calls in progress.
    pub fn active(&self) -> Vec<CallSummary> {
        let mut calls: Vec<_> = self.live().values().map(|l| l.summary.clone()).collect();
        calls.sort_by_key(|c| c.started_at_ms);
        calls
    }

    /// Send a command to a live call; false if no such call.
    pub fn command(&self, call_id: &str, command: CallCommand) -> bool {
        match self.live().get(call_id) {
            Some(l) => l.commands.try_send(command).is_ok(),
            None => false,
        }
    }

    /// The caller cancelled an unanswered call (by SIP Call-ID).
    pub fn cancelled(&self, sip_call_id: &str) {
        let target = self
            .live()
            .values()
            .find(|l| l.summary.sip_call_id == sip_call_id)
            .map(|l| l.commands.clone());
        if let Some(tx) = target {
            let _ = tx.try_send(CallCommand::Cancelled);
        }
    }

    /// The call's agent changed (a hand-off): the API lists the one running it.
    fn set_agent(&self, call_id: &str, agent: &str) {
        if let Some(live) = self.live().get_mut(call_id) {
            live.summary.agent = Some(agent.to_string());
        }
    }

    fn register(&self, summary: CallSummary) -> mpsc::Receiver<CallCommand> {
        let (tx, rx) = mpsc::channel(16);
        self.live().insert(
            summary.id.clone(),
            Live {
                summary,
                commands: tx,
            },
        );
        rx
    }
}

/// The first event of every call.
fn created(
    direction: &str,
    caller: &str,
    callee: &str,
    transport: &str,
    agent: Option<&Arc<AgentVersion>>,
    metadata: Option<serde_json::Value>,
) -> EventKind {
    EventKind::Created {
        direction: direction.into(),
        caller: caller.into(),
        callee: callee.into(),
        transport: transport.into(),
        agent: agent.map(|a| a.name().to_string()),
        agent_version: agent.map(|a| a.info.version.clone()),
        agent_hash: agent.map(|a| a.hash.clone()),
        metadata,
    }
}

/// An agent session that on-start accepted, waiting for its media.
struct Accepted {
    agent: AgentSession,
    config: SessionConfig,
    /// The model provider in effect when the call started; the call keeps it.
    provider: Arc<dyn ModelProvider>,
    actions: Vec<crate::domain::Action>,
    /// The agent failed in on-start: play the apology and hang up.
    fallback: bool,
    /// The model was offered the host's end-call tool.
    end_call: bool,
    /// The MCP tools offered to the model.
    mcp_tools: McpRoutes,
    /// The call as the agent was told of it; the next agent of a hand-off gets the same.
    info: CallInfo,
}

/// A hang-up or transfer after speech waits this long once the last packet is out: receivers'
/// jitter buffers hold 40–200 ms, and a BYE cuts what they still hold.
const FINAL_TAIL: Duration = Duration::from_millis(250);

/// The host's tool that lets the model end the call after its goodbye.
fn end_call_tool() -> crate::domain::Tool {
    crate::domain::Tool {
        name: END_CALL_TOOL.into(),
        description: "End the phone call. Use it when the conversation is over and the caller \
                      has nothing more to ask; then say a short goodbye."
            .into(),
        parameters: r#"{"type":"object","properties":{"reason":{"type":"string","description":"Why the call ends, in a few words"}}}"#.into(),
    }
}

/// Offer the model the host's end-call tool when the agent's settings want it and the agent
/// has no tool of that name itself (its own wins); whether it was offered.
fn offer_end_call(deps: &CallDeps, version: &AgentVersion, config: &mut SessionConfig) -> bool {
    let runtime = deps.registry.runtime();
    let wanted = runtime.settings(version.name()).is_some_and(|s| s.end_call);
    let end_call = wanted && !config.tools.iter().any(|t| t.name == END_CALL_TOOL);
    if end_call {
        config.tools.push(end_call_tool());
    }
    end_call
}

/// Offer the model the MCP tools of the agent's version: the ones the agent put in its session
/// config (it read them with `mcp.tools()` in on-start and kept those it wants, with its own
/// descriptions, maybe under names it gave with `mcp.rename`), or, when it named none of them,
/// all of them beside its own tools. Returns where each offered tool goes; the call keeps this
/// set to its end. (The catalog and the renames are taken apart from their session, which must
/// not be borrowed across an await.)
async fn offer_mcp_tools(
    catalog: Arc<crate::mcp::Catalog>,
    renames: HashMap<String, String>,
    config: &mut SessionConfig,
) -> McpRoutes {
    if catalog.is_empty() {
        return McpRoutes::new();
    }
    let tools = catalog.tools().await;
    let route = |t: &crate::mcp::McpTool| McpRoute {
        server: t.server.clone(),
        tool: t.tool.clone(),
    };
    let chosen: McpRoutes = config
        .tools
        .iter()
        .filter_map(|own| {
            let listed = renames.get(&own.name).unwrap_or(&own.name);
            let tool = tools.iter().find(|t| t.name == *listed)?;
            Some((own.name.clone(), route(tool)))
        })
        .collect();
    if !chosen.is_empty() {
        return chosen;
    }
    let mut routes = McpRoutes::new();
    for tool in &tools {
        if config.tools.len() >= crate::plugins::session::caps::MAX_TOOLS {
            tracing::warn!(
                offered = routes.len(),
                of = tools.len(),
                "too many tools for the model; the other MCP tools are not offered"
            );
            break;
        }
        config.tools.push(crate::domain::Tool {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.parameters.clone(),
        });
        routes.insert(tool.name.clone(), route(tool));
    }
    routes
}

/// Start the agent a live call is handed to: the live version of `request.to` (routing
/// registry), a fresh sandbox, `on-start` with the same call info and the hand-off context.
async fn start_handed_off(
    deps: Arc<CallDeps>,
    info: CallInfo,
    request: HandoffRequest,
    outcome: Option<String>,
) -> Result<NewAgent<AgentSession>, HandoffFailed> {
    let version = deps
        .registry
        .snapshot()
        .agents
        .get(&request.to)
        .cloned()
        .ok_or_else(|| HandoffFailed::Unknown(request.to.clone()))?;
    let context = Handoff {
        from_agent: request.from,
        summary: request.summary,
        metadata: handoff::metadata(&info.metadata, outcome.as_deref()),
    };
    let mut agent = deps
        .registry
        .runtime()
        .session(&version, &info.call_id)
        .await
        .map_err(HandoffFailed::Fault)?;
    match agent.start_handed_off(&info, context).await {
        Ok(StartOutcome::Accept {
            mut config,
            actions,
        }) => {
            let end_call = offer_end_call(&deps, &version, &mut config);
            let mcp_tools =
                offer_mcp_tools(agent.mcp().clone(), agent.mcp_renames(), &mut config).await;
            deps.set_agent(&info.call_id, version.name());
            Ok(NewAgent {
                agent,
                version: version.info.version.clone(),
                config,
                actions,
                end_call,
                mcp_tools,
                conversation: conversation_config(&deps, version.name()),
            })
        }
        Ok(StartOutcome::Reject(r)) => Err(HandoffFailed::Rejected {
            code: r.code,
            reason: r.reason,
        }),
        Err(fault) => Err(HandoffFailed::Fault(fault)),
    }
}

enum Started {
    Run(Box<Accepted>),
    Reject(u16, String),
}

/// Instantiate the agent and run on-start, applying the start fallback on failure.
async fn start_agent(
    deps: &CallDeps,
    recorder: &Recorder,
    version: &Arc<AgentVersion>,
    call_id: &str,
    info: &CallInfo,
) -> Started {
    recorder.record(EventKind::State {
        state: CallState::Starting,
    });
    let runtime = deps.registry.runtime();
    let fault = match runtime.session(version, call_id).await {
        Ok(mut agent) => match agent.start(info).await {
            Ok(StartOutcome::Accept {
                mut config,
                actions,
            }) => {
                let end_call = offer_end_call(deps, version, &mut config);
                let mcp_tools =
                    offer_mcp_tools(agent.mcp().clone(), agent.mcp_renames(), &mut config).await;
                return Started::Run(Box::new(Accepted {
                    agent,
                    config,
                    provider: deps.provider(),
                    actions,
                    fallback: false,
                    end_call,
                    mcp_tools,
                    info: info.clone(),
                }));
            }
            Ok(StartOutcome::Reject(r)) => return Started::Reject(r.code, r.reason),
            Err(fault) => (fault, Some(agent)),
        },
        Err(fault) => (fault, None),
    };
    let (fault, agent) = fault;
    recorder.record(EventKind::AgentFault { fault });
    match (runtime.config().fallback.on_start, agent) {
        (StartFallback::Apology, Some(agent)) => Started::Run(Box::new(Accepted {
            agent,
            config: SessionConfig {
                instructions: String::new(),
                greeting: None,
                voice: None,
                language: None,
                tools: Vec::new(),
                model: None,
            },
            provider: deps.provider(),
            actions: Vec::new(),
            fallback: true,
            end_call: false,
            mcp_tools: McpRoutes::new(),
            info: info.clone(),
        })),
        _ => Started::Reject(503, "Agent unavailable".into()),
    }
}

/// Connect the model for the call's codec, or only the local apology when the agent failed in
/// on-start or the model cannot be reached, so the caller never hears silence. The second value
/// says why the call runs on the fallback.
async fn connect_for(
    deps: &CallDeps,
    recorder: &Recorder,
    // Not the whole `Accepted`: the agent session is not Sync and must not be borrowed here.
    fallback: bool,
    config: &SessionConfig,
    provider: &dyn ModelProvider,
    leg: LegFormat,
) -> (ModelSession, Option<String>) {
    let why = if fallback {
        "agent failed"
    } else {
        match brain::connect_model(provider, recorder, config, leg).await {
            Some(model) => return (model, None),
            None => "model unavailable",
        }
    };
    (
        brain::connect_fallback(deps, leg).await,
        Some(why.to_string()),
    )
}

/// An inbound call's model, or `None` when it failed and `[agents.fallback] on-start =
/// "reject"` wants the call refused (503) rather than answered with the apology: the same rule
/// as for an agent failing in on-start, since the caller cannot tell the two apart.
async fn connect_inbound(
    deps: &CallDeps,
    recorder: &Recorder,
    fallback: bool,
    config: &SessionConfig,
    provider: &dyn ModelProvider,
    leg: LegFormat,
) -> Option<(ModelSession, Option<String>)> {
    let rejects = deps.registry.runtime().config().fallback.on_start == StartFallback::Reject;
    if fallback || !rejects {
        return Some(connect_for(deps, recorder, fallback, config, provider, leg).await);
    }
    let model = brain::connect_model(provider, recorder, config, leg).await?;
    Some((model, None))
}

fn media_config(deps: &CallDeps, call_id: &str, inbound_rate: u32) -> MediaConfig {
    MediaConfig {
        bind_ip: deps.media_ip,
        inbound_rate,
        media_timeout: deps.config.media_timeout(),
        silence: if deps.config.send_silence {
            SilenceMode::SendSilence
        } else {
            SilenceMode::Suppress
        },
        call_id: call_id.to_string(),
        ..MediaConfig::default()
    }
}

/// A call whose leg is up, in either direction.
struct Answered<L> {
    recorder: Recorder,
    call_id: String,
    accepted: Accepted,
    leg: L,
    model: ModelSession,
    /// Why the call runs on the fallback (agent or model failed), if it does.
    failure: Option<String>,
    commands: mpsc::Receiver<CallCommand>,
    /// We placed the call.
    outbound: bool,
    /// Run answering-machine detection beside the call (an outbound call that asked for it).
    detect_machine: bool,
}

/// Record the answer and run the call to its end.
async fn run_answered<L: Leg>(deps: &Arc<CallDeps>, a: Answered<L>) {
    a.recorder.record(EventKind::Answered {
        codec: a.leg.facts().codec.clone().unwrap_or_default(),
        model: if a.failure.is_some() {
            "fallback".into()
        } else {
            a.accepted.provider.name().into()
        },
    });
    let runtime = deps.registry.runtime();
    let logic = CallLogic::new(LogicConfig {
        drain_limit: Duration::from_secs(deps.config.drain_timeout_secs),
        final_tail: FINAL_TAIL,
        fallback_transfer: runtime.config().fallback.transfer.clone(),
        fallback_actions: runtime.fallback_actions(),
        capabilities: a.leg.capabilities(),
        outbound: a.outbound,
        end_call: a.accepted.end_call,
        agent: a.accepted.agent.version().name().to_string(),
        mcp_tools: a.accepted.mcp_tools,
        greeting: a.accepted.config.greeting.is_some(),
        conversation: conversation_config(deps, a.accepted.agent.version().name()),
    });
    let agent_name = a.accepted.agent.version().name();
    let format = a.leg.format();
    let leg_format = format.unwrap_or(Codec::Pcmu.into());
    // A model that closes while the call is on hold is replaced on resume (not the apology),
    // and the next agent's session follows a hand-off, from the provider the call started
    // with.
    let brain = a.failure.is_none().then(|| Brain {
        provider: a.accepted.provider.clone(),
        config: a.accepted.config.clone(),
        leg: leg_format,
    });
    let (handoff_deps, info) = (deps.clone(), a.accepted.info);
    let start_agent: task::StartAgent<AgentSession> = Box::new(move |request, outcome| {
        Box::pin(start_handed_off(
            handoff_deps.clone(),
            info.clone(),
            request,
            outcome,
        ))
    });
    let fallback_deps = deps.clone();
    // Caller audio that the model only echoes back never passes the audio path's tap.
    let machine = (a.detect_machine && !a.model.loopback)
        .then(|| {
            MachineDetection::start(
                a.model.input_format.sample_rate(),
                deps.config.amd.clone(),
                std::time::Instant::now(),
            )
        })
        .flatten();
    let task = CallTask {
        recording: recording_path(deps, agent_name, &a.call_id),
        recorder: a.recorder,
        leg: a.leg,
        agent: a.accepted.agent,
        model: a.model,
        commands: a.commands,
        logic,
        outcome: None,
        fallback: Some(Box::new(move || {
            Box::pin(async move { brain::connect_fallback(&fallback_deps, leg_format).await })
        })),
        brain,
        start_agent: Some(start_agent),
        model_ended: false,
        mcp_calls: Default::default(),
        machine,
    };
    task.run(a.accepted.actions, a.failure).await;
    deps.forget(&a.call_id);
}

/// The conversation settings of an agent's calls: its own section, or `[calls.conversation]`.
fn conversation_config(deps: &CallDeps, agent: &str) -> ConversationConfig {
    deps.registry
        .runtime()
        .settings(agent)
        .and_then(|s| s.conversation.clone())
        .unwrap_or_else(|| deps.config.conversation.clone())
}

/// Where the call is recorded, when the configuration (or the agent's settings) want it.
fn recording_path(deps: &CallDeps, agent: &str, call_id: &str) -> Option<PathBuf> {
    let config = &deps.config;
    let wanted = deps
        .registry
        .runtime()
        .settings(agent)
        .and_then(|s| s.record)
        .unwrap_or(config.record);
    let dir = config.recordings_dir.as_ref().filter(|_| wanted)?;
    Some(dir.join(format!("{call_id}.wav")))
}
