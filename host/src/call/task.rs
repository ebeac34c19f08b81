//! The call task: the thin shell around [`CallLogic`]. It owns the leg, the agent session, the
//! model session and the API's commands, turns what they report into [`Input`]s with the call
//! time, and carries out the [`Effect`]s the logic asks for. Audio itself goes straight between
//! the leg and the model; the logic only decides whether agent audio is still wanted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::CallCommand;
use super::agent::CallAgent;
use super::audio::{decode_from_model, encode_for_model};
use super::brain::{Brain, Switch};
use super::events::Recorder;
use super::leg::{CallerAudio, DigitSource, Leg, LegEvent};
use super::logic::{
    CallLogic, Effect, Ending, HandedOff, HandoffFailed, HandoffRequest, Hook, HookResult, Input,
    McpRoutes,
};
use super::machine::MachineDetection;
use crate::domain::agent_event::AgentRequest;
use crate::domain::conversation::ConversationConfig;
use crate::domain::events::{CallState, EventKind};
use crate::domain::{Action, EndReason, SessionConfig};
use crate::media::amd::AmdEvent;
use crate::model::{AudioFormat, Command, ModelEvent, ModelSession};

/// Connects the local apology speech when the model fails mid-call.
pub(crate) type FallbackModel = Box<dyn FnOnce() -> BoxFuture<'static, ModelSession> + Send>;

/// An agent the call is handed to, started: its session, its session config, the effects
/// its `on-start` queued, whether the model was offered the end-call tool, its conversation
/// settings.
pub(crate) struct NewAgent<A> {
    pub agent: A,
    pub version: String,
    pub config: SessionConfig,
    pub actions: Vec<Action>,
    pub end_call: bool,
    pub mcp_tools: McpRoutes,
    pub conversation: ConversationConfig,
}

/// Starts the agent a call is handed to (`on-start` with the hand-off context); the second
/// argument is the outcome the last agent set, which the context's metadata carries.
pub(crate) type StartAgent<A> = Box<
    dyn Fn(HandoffRequest, Option<String>) -> BoxFuture<'static, Result<NewAgent<A>, HandoffFailed>>
        + Send
        + Sync,
>;

/// Everything a running call owns.
pub(crate) struct CallTask<L: Leg, A: CallAgent> {
    pub recorder: Recorder,
    pub leg: L,
    pub agent: A,
    pub model: ModelSession,
    pub commands: mpsc::Receiver<CallCommand>,
    pub logic: CallLogic,
    /// Where to record the call, when the configuration wants it.
    pub recording: Option<PathBuf>,
    pub fallback: Option<FallbackModel>,
    /// The model side for a session that takes over (after a hold, or for the next agent);
    /// `None` when the call runs on the fallback.
    pub brain: Option<Brain>,
    /// How an agent the call is handed to starts; `None` where calls are not handed over.
    pub start_agent: Option<StartAgent<A>>,
    /// The model's event stream ended (it stays ended until the model is replaced).
    pub model_ended: bool,
    /// The business outcome the agent set last.
    pub outcome: Option<String>,
    /// MCP calls in flight; each answers with [`Input::McpDone`]. Dropped (aborted) with the
    /// call.
    pub mcp_calls: JoinSet<Input>,
    /// Answering-machine detection on the callee's audio, while it has more to say.
    pub machine: Option<MachineDetection>,
}

/// The detector's next finding (`None`: it is done).
async fn next_finding(machine: &mut Option<MachineDetection>) -> Option<AmdEvent> {
    match machine {
        Some(m) => m.next().await,
        None => None,
    }
}

/// One caller frame to the model.
fn to_model(commands: &mpsc::Sender<Command>, format: AudioFormat, samples: &[i16]) {
    // A closed model session shows up as its Closed event; nothing to do here.
    let _ = commands.try_send(Command::Audio(encode_for_model(samples, format)));
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What the model reports, as logic input; agent audio is handled apart.
fn model_input(event: ModelEvent) -> Option<Input> {
    Some(match event {
        ModelEvent::Audio { .. } | ModelEvent::GoingAway { .. } => return None,
        ModelEvent::SpeechStarted { .. } => Input::SpeechStarted,
        ModelEvent::SpeechStopped { .. } => Input::SpeechStopped,
        ModelEvent::Transcript {
            role,
            text,
            is_final,
            ..
        } => Input::Transcript {
            role,
            text,
            is_final,
        },
        ModelEvent::ToolCall {
            call_id,
            name,
            arguments,
        } => Input::ToolCall {
            call_id,
            name,
            arguments,
        },
        ModelEvent::Usage(u) => Input::Usage(u.items()),
        ModelEvent::UsageItems(items) => Input::Usage(items),
        ModelEvent::StageLatency(stages) => Input::StageLatency(stages),
        ModelEvent::AudioStarted => Input::ProviderAudioStarted,
        ModelEvent::AudioStopped => Input::ProviderAudioStopped,
        // The provider heard the keypad on its own line: as if the leg reported it.
        ModelEvent::Digit(digit) => Input::Digit {
            digit,
            source: DigitSource::Leg,
        },
        ModelEvent::ResponseDone { .. } => Input::ResponseDone,
        ModelEvent::Error(e) => Input::ModelError(e.to_string()),
        ModelEvent::Closed(reason) => Input::ModelClosed(format!("{reason:?}")),
    })
}

impl<L: Leg, A: CallAgent> CallTask<L, A> {
    /// Run the call until it ends. `start_actions` came from on-start; `failure` says why the
    /// agent or model already failed, in which case the call only plays the apology.
    pub(crate) async fn run(mut self, start_actions: Vec<Action>, failure: Option<String>) {
        // Runs inside the task's `call` span (inbound or outbound), which carries the call id.
        let started = Instant::now();
        // Processing time of the last caller frame on its way to the model.
        let host_in_ns = Arc::new(AtomicU64::new(0));
        self.route_caller_audio(&host_in_ns);
        // What on-start asked for (an outcome, a hint of the first answer) now the model is up.
        self.take_requests();
        let start = Input::Start {
            actions: start_actions,
            failure,
        };
        let mut ending = self.feed(started, start, &host_in_ns).await;
        while ending.is_none() {
            let deadline = self.logic.deadline().map(|d| started + d);
            let input = tokio::select! {
                ev = self.leg.next_event() => match ev {
                    LegEvent::CallerAudio(samples) => {
                        if let Some(m) = &self.machine {
                            m.tap().copy(&samples);
                        }
                        to_model(&self.model.commands, self.model.input_format, &samples);
                        continue;
                    }
                    other => leg_input(other, started),
                },
                ev = self.model.events.recv(), if !self.model_ended => match ev {
                    Some(ModelEvent::Audio { item_id, data, format }) => {
                        play(&mut self.logic, &mut self.leg, started, &item_id, &data, format, &host_in_ns);
                        continue;
                    }
                    Some(ev) => match model_input(ev) {
                        Some(input) => input,
                        None => continue,
                    },
                    None => {
                        self.model_ended = true;
                        Input::ModelGone
                    }
                },
                found = next_finding(&mut self.machine), if self.machine.is_some() => match found {
                    Some(event) => Input::Machine(event),
                    None => {
                        self.machine = None;
                        continue;
                    }
                },
                cmd = self.commands.recv() => Input::Command(cmd),
                Some(done) = self.mcp_calls.join_next(), if !self.mcp_calls.is_empty() => match done {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::error!(error = %e, "an MCP call task failed");
                        continue;
                    }
                },
                () = sleep_until_some(deadline) => Input::Tick,
            };
            ending = self.feed(started, input, &host_in_ns).await;
        }
        self.finish(ending.expect("the loop ends with an ending"))
            .await;
    }

    /// Hand one input to the logic and carry out its effects, then what arrived while an agent
    /// tool ran; the call's ending once it has one.
    async fn feed(
        &mut self,
        started: Instant,
        input: Input,
        host_in_ns: &Arc<AtomicU64>,
    ) -> Option<Ending> {
        let mut inputs = VecDeque::from([input]);
        let mut ending = None;
        while ending.is_none()
            && let Some(input) = inputs.pop_front()
        {
            ending = self.feed_one(started, input, &mut inputs, host_in_ns).await;
        }
        ending
    }

    /// Hand one input to the logic and carry out its effects; inputs held back while a tool
    /// ran go to `deferred`.
    async fn feed_one(
        &mut self,
        started: Instant,
        input: Input,
        deferred: &mut VecDeque<Input>,
        host_in_ns: &Arc<AtomicU64>,
    ) -> Option<Ending> {
        self.logic
            .handle(started.elapsed(), input, self.leg.playout());
        let mut ending = None;
        while let Some(effect) = self.logic.poll() {
            match effect {
                Effect::Record(kind) => self.recorder.record(kind),
                Effect::StartRecording => self.start_recording(),
                Effect::Model(command) => {
                    let _ = self.model.send(command).await;
                }
                Effect::Hook(hook @ Hook::ToolCall { .. }) => {
                    let result = self.run_tool(started, hook, deferred, host_in_ns).await;
                    self.take_requests();
                    let input = Input::Hook(result);
                    self.logic
                        .handle(started.elapsed(), input, self.leg.playout());
                }
                Effect::Hook(hook) => {
                    let result = self.agent.hook(hook).await;
                    self.take_requests();
                    let input = Input::Hook(result);
                    self.logic
                        .handle(started.elapsed(), input, self.leg.playout());
                }
                Effect::McpCall {
                    call_id,
                    route,
                    arguments,
                } => {
                    let call = self.agent.call_mcp(&route, &arguments);
                    self.mcp_calls.spawn(async move {
                        let result = call.await;
                        Input::McpDone {
                            call_id,
                            route,
                            result,
                        }
                    });
                }
                Effect::CallerAudio(to_model) => {
                    if to_model {
                        self.route_caller_audio(host_in_ns);
                    } else if let Some(audio) = self.leg.audio()
                        && let Err(e) =
                            audio.route_caller(CallerAudio::Sink(Box::new(|_: &[i16]| {})))
                    {
                        tracing::debug!(error = %e, "the leg ended before its audio was held");
                    }
                }
                Effect::SendDigits(digits) => {
                    if let Err(e) = self.leg.send_digits(&digits) {
                        tracing::warn!(error = %e, "sending DTMF failed");
                    }
                }
                Effect::Transfer(target) => {
                    let result = self.leg.transfer(&target).await;
                    let input = Input::TransferStarted(result.map_err(|e| e.to_string()));
                    self.logic
                        .handle(started.elapsed(), input, self.leg.playout());
                }
                Effect::Hangup => self.leg.hangup().await,
                Effect::ConnectFallback => {
                    if let Some(connect) = self.fallback.take() {
                        self.model = connect().await;
                        self.model_ended = false;
                        self.route_caller_audio(host_in_ns);
                    }
                }
                Effect::EndAgent(reason) => {
                    if let Err(fault) = self.agent.end(&reason).await {
                        self.recorder.record(EventKind::AgentFault { fault });
                    }
                    // An outcome set in on-end stays the call's.
                    self.take_requests();
                }
                Effect::StartAgent(request) => {
                    let result = self.hand_over(request, host_in_ns).await;
                    let input = Input::HandedOff(result);
                    self.logic
                        .handle(started.elapsed(), input, self.leg.playout());
                }
                Effect::Reconnect(history) => {
                    let turns = history.len();
                    let connected = match &self.brain {
                        Some(brain) => brain.reconnect(history).await,
                        None => Err("no model to reconnect to".to_string()),
                    };
                    match connected {
                        Ok(model) => {
                            tracing::info!(turns, "a new model session took over after the hold");
                            self.model = model;
                            self.model_ended = false;
                        }
                        Err(why) => {
                            let input = Input::ModelClosed(format!("reconnecting failed: {why}"));
                            self.logic
                                .handle(started.elapsed(), input, self.leg.playout());
                        }
                    }
                }
                Effect::End(e) => ending = Some(e),
            }
        }
        ending
    }

    /// Run the agent's tool. It may take long (it waits on the network), and the caller must
    /// not hear dead air meanwhile: agent audio keeps playing, the caller can interrupt it (the
    /// brain hears that), and the fillers the logic asks for are said. What the model reports
    /// that would start another agent hook (a transcript, another tool call) or end the call
    /// waits in `deferred`, for the logic takes one agent hook at a time; the leg's events
    /// wait in the leg until the tool has answered, as for any hook.
    async fn run_tool(
        &mut self,
        started: Instant,
        hook: Hook,
        deferred: &mut VecDeque<Input>,
        host_in_ns: &AtomicU64,
    ) -> HookResult {
        let CallTask {
            agent,
            logic,
            leg,
            model,
            recorder,
            model_ended,
            ..
        } = self;
        let answer = agent.hook(hook);
        tokio::pin!(answer);
        loop {
            let deadline = logic.deadline().map(|d| started + d);
            let input = tokio::select! {
                result = &mut answer => return result,
                ev = model.events.recv(), if !*model_ended => match ev {
                    Some(ModelEvent::Audio { item_id, data, format }) => {
                        play(logic, leg, started, &item_id, &data, format, host_in_ns);
                        continue;
                    }
                    Some(ev) => match model_input(ev) {
                        Some(input) if beside_a_tool(&input) => input,
                        Some(input) => {
                            deferred.push_back(input);
                            continue;
                        }
                        None => continue,
                    },
                    None => {
                        *model_ended = true;
                        deferred.push_back(Input::ModelGone);
                        continue;
                    }
                },
                () = sleep_until_some(deadline) => Input::Tick,
            };
            logic.handle(started.elapsed(), input, leg.playout());
            // Waiting for the tool, the logic only records and speaks (or cuts speech).
            while let Some(effect) = logic.poll() {
                match effect {
                    Effect::Record(kind) => recorder.record(kind),
                    Effect::Model(command) => {
                        let _ = model.send(command).await;
                    }
                    other => tracing::error!(?other, "an effect while a tool runs; dropped"),
                }
            }
        }
    }

    /// Start the agent the call is handed to, then move the model to its session config: the
    /// running session takes it, or a new one (with the conversation so far) replaces it.
    async fn hand_over(
        &mut self,
        request: HandoffRequest,
        host_in_ns: &Arc<AtomicU64>,
    ) -> Result<HandedOff, HandoffFailed> {
        let Some(start) = &self.start_agent else {
            return Err(HandoffFailed::Unknown(request.to));
        };
        if self.brain.is_none() {
            return Err(HandoffFailed::Model(
                "the call runs on the fallback speech, which no agent can take over".into(),
            ));
        }
        let history = request.history.clone();
        let new = start(request, self.outcome.clone()).await?;
        let brain = self.brain.as_mut().expect("checked");
        let switch = match brain.hand_over(new.config.clone(), history).await {
            Ok(switch) => switch,
            Err(why) => {
                let mut agent = new.agent;
                if let Err(fault) = agent.end(&EndReason::Failed(why.clone())).await {
                    self.recorder.record(EventKind::AgentFault { fault });
                }
                return Err(HandoffFailed::Model(why));
            }
        };
        let new_session = match switch {
            Switch::Update(update) => {
                let _ = self.model.send(Command::Update(update)).await;
                false
            }
            Switch::Replace(session) => {
                let old = std::mem::replace(&mut self.model, session);
                let _ = old.commands.try_send(Command::Close);
                self.model_ended = false;
                self.route_caller_audio(host_in_ns);
                true
            }
        };
        self.agent = new.agent;
        // What the new agent asked for in on-start (a hint of the first answer) goes to the
        // model it now runs.
        self.take_requests();
        Ok(HandedOff {
            version: new.version,
            actions: new.actions,
            greeting: new.config.greeting,
            new_session,
            end_call: new.end_call,
            mcp_tools: new.mcp_tools,
            conversation: new.conversation,
        })
    }

    /// Requests the agent made in its last hook: the outcome is kept for the call record; the
    /// hint of what the caller will say goes to the model (a local recogniser listens for it);
    /// an opt-out is recorded, and the campaigns layer puts the number on its list.
    fn take_requests(&mut self) {
        for request in self.agent.take_requests() {
            match request {
                AgentRequest::SetOutcome(outcome) => self.outcome = Some(outcome),
                AgentRequest::Expect(hint) => {
                    tracing::debug!(?hint, "agent expects");
                    if let Err(e) = self.model.commands.try_send(Command::Expect(hint)) {
                        tracing::warn!(error = %e, "the model did not take the agent's hint");
                    }
                }
                AgentRequest::DoNotCall => self.recorder.record(EventKind::OptOut {
                    source: "agent".into(),
                }),
                AgentRequest::TurnLimits(limits) => self.logic.set_turn_limits(limits),
            }
        }
    }

    /// Caller audio goes from the media thread straight to the model session, or, when the
    /// session would only send it back, straight back to the caller.
    fn route_caller_audio(&mut self, host_in_ns: &Arc<AtomicU64>) {
        let route = if self.model.loopback {
            CallerAudio::LoopBack
        } else {
            let commands = self.model.commands.clone();
            let format = self.model.input_format;
            let host_in_ns = host_in_ns.clone();
            let machine = self.machine.as_ref().map(MachineDetection::tap);
            CallerAudio::Sink(Box::new(move |samples: &[i16]| {
                let t = std::time::Instant::now();
                if let Some(tap) = &machine {
                    tap.copy(samples);
                }
                to_model(&commands, format, samples);
                host_in_ns.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }))
        };
        if let Some(audio) = self.leg.audio()
            && let Err(e) = audio.route_caller(route)
        {
            tracing::debug!(error = %e, "the leg ended before its audio route was set");
        }
    }

    /// Start the WAV recording when the configuration asks for one. A recording that cannot
    /// start is logged and the call goes on without it.
    fn start_recording(&mut self) {
        let Some(path) = self.recording.clone() else {
            return;
        };
        let Some(audio) = self.leg.audio() else {
            return;
        };
        let started = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| e.to_string()),
            None => Ok(()),
        }
        .and_then(|()| audio.record(&path).map_err(|e| e.to_string()));
        match started {
            Ok(()) => self.recorder.record(EventKind::Recording {
                path: path.display().to_string(),
            }),
            Err(error) => tracing::warn!(%error, path = %path.display(), "recording did not start"),
        }
    }

    async fn finish(mut self, ending: Ending) {
        if let Err(fault) = self.agent.end(&ending.reason).await {
            self.recorder.record(EventKind::AgentFault { fault });
        }
        self.take_requests();
        let _ = self.model.commands.try_send(Command::Close);
        let reason = &ending.reason;
        match self.leg.close().await {
            Some(stats) => {
                tracing::info!(?reason, %stats, "call ended");
                self.recorder.record(EventKind::MediaStats {
                    packets_received: stats.packets_received,
                    packets_expected: stats.packets_expected,
                    packets_lost: stats.packets_lost,
                    jitter_ms: stats.jitter_ms,
                    concealed_ms: stats.concealed_ms,
                    srtp_auth_failures: stats.srtp_auth_failures,
                    srtp_replayed: stats.srtp_replayed,
                });
            }
            None => tracing::info!(?reason, "call ended"),
        }
        self.recorder.record(EventKind::Ended {
            reason: ending.describe(),
            abnormal: ending.abnormal,
            outcome: self.outcome.take(),
        });
        self.recorder.record(EventKind::State {
            state: CallState::Ended,
        });
    }
}

/// Whether the logic takes `input` while an agent tool runs: what only records, counts or
/// cuts speech (a barge-in on a filler), not what starts an agent hook or ends the model.
fn beside_a_tool(input: &Input) -> bool {
    matches!(
        input,
        Input::SpeechStarted
            | Input::SpeechStopped
            | Input::Usage(_)
            | Input::StageLatency(_)
            | Input::ResponseDone
            | Input::ModelError(_)
            | Input::ProviderAudioStarted
            | Input::ProviderAudioStopped
    )
}

/// Agent audio to the caller, unless barge-in cut its item.
fn play(
    logic: &mut CallLogic,
    leg: &mut impl Leg,
    started: Instant,
    item_id: &str,
    data: &[u8],
    format: AudioFormat,
    host_in_ns: &AtomicU64,
) {
    let host_in = Duration::from_nanos(host_in_ns.load(Ordering::Relaxed));
    let now = started.elapsed();
    if !logic.agent_audio(now, item_id, host_in, leg.playout()) {
        return;
    }
    if let Some(audio) = leg.audio() {
        let pcm = decode_from_model(data, format);
        if let Err(e) = audio.play(&pcm, format.sample_rate()) {
            tracing::warn!(error = %e, "queueing agent audio failed");
        }
    }
}

/// What the leg reports, as logic input at call time.
fn leg_input(event: LegEvent, started: Instant) -> Input {
    match event {
        LegEvent::Hangup => Input::FarEndHangup,
        LegEvent::Digit { digit, source } => Input::Digit { digit, source },
        LegEvent::TransferProgress { code, reason } => Input::TransferProgress { code, reason },
        LegEvent::TransferOutcome {
            code,
            reason,
            success,
        } => Input::TransferOutcome {
            code,
            reason,
            success,
        },
        LegEvent::PlayoutStarted { at } => Input::PlayoutStarted {
            at: at.saturating_duration_since(started),
        },
        LegEvent::MediaTimeout => Input::MediaTimeout,
        LegEvent::Hold(held) => Input::Hold(held),
        LegEvent::SessionTimer(note) => Input::SessionTimer(note),
        LegEvent::Lost(why) => Input::LegLost(why),
        // The drain check runs after every input.
        LegEvent::PlayoutDrained | LegEvent::CallerAudio(_) => Input::Tick,
    }
}
