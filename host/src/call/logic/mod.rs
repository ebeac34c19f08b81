//! The call as a state machine: what a call does next is a pure function of its state, an
//! [`Input`] and the call time `now` (time since the call task started). No I/O, no clock, no
//! tokio in here: the call task ([`super::task`]) moves inputs in and carries out the
//! [`Effect`]s it polls out, and the tests drive this with a fake clock.
//!
//! An effect that needs an answer (an agent hook, starting a transfer) is the last effect of
//! its step: the logic waits for the matching input ([`Input::Hook`],
//! [`Input::TransferStarted`]) before it does anything else.

mod conversation;
mod io;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

pub use conversation::Limit;
use conversation::{ConversationClock, Due};
pub use io::{
    Effect, Ending, HandedOff, HandoffFailed, HandoffRequest, Hook, HookResult, Input, LogicConfig,
    McpRoute, McpRoutes,
};

use super::CallCommand;
use super::digits::{Collected, DigitCollector};
use super::handoff::{self, AGENT_TARGET};
use super::leg::{Capability, DigitSource, LegError, Playout};
use crate::domain::agent_event::{CallProgress, Notification};
use crate::domain::conversation::TurnLimits;
use crate::domain::events::{CallState, EventKind, HANDED_OFF, StageLatency};
use crate::domain::usage::{self, UsageItem};
use crate::domain::{Action, AgentFault, EndReason, Role};
use crate::media::amd::AmdEvent;
use crate::model::Command;

/// The tool the host offers the model to end the call (`[agent.<name>] end-call = true`).
pub const END_CALL_TOOL: &str = "end_call";

/// An action that waits until queued speech has been played.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Final {
    /// Hang up; on the call's own clock when a limit says why.
    Hangup(Option<Limit>),
    Transfer(String),
}

/// The model item being played to the caller.
#[derive(Debug)]
struct Speaking {
    item_id: String,
    /// Audio queued ahead of this item when it arrived: it starts playing once that has gone.
    lead_ms: u64,
}

/// Agent audio dropped from the playout, and what of its item had been played.
#[derive(Debug)]
struct Cut {
    item_id: String,
    played_ms: u64,
    discarded_ms: u64,
}

/// Per-turn latency: caller end of speech → first agent audio packet on the wire.
#[derive(Debug, Default)]
struct TurnClock {
    turn: u32,
    speech_stopped: Option<Duration>,
    first_model_audio: Option<Duration>,
    host_in: Duration,
    /// A cascade brain's split of the turn's model time, when it reported one.
    stages: Option<StageLatency>,
}

/// What the logic waits for before it takes the next input.
#[derive(Debug)]
enum Awaiting {
    /// A hook whose actions are carried out.
    Actions,
    /// The agent's answer to the model's tool call `call_id`.
    Tool { call_id: String },
    /// The agent heard of the model's MCP call `call_id` and may have vetoed it.
    McpVeto {
        call_id: String,
        route: McpRoute,
        arguments: String,
    },
    /// The agent heard that the transfer succeeded; then the call ends.
    Transferred { target: String },
    /// The leg's answer to a transfer; `after_final` when the agent (or the fallback) asked.
    TransferStart { target: String, after_final: bool },
    /// The agent the call is handed to, started at call time `requested`.
    Handoff { to: String, requested: Duration },
    /// The agent heard of caller silence or the coming end of the call, and may say something
    /// itself; otherwise the host says the configured words.
    Prompt(Prompt),
}

/// Something the call's clock has the agent (or else the host) say.
#[derive(Debug)]
enum Prompt {
    Reprompt { silent: Duration, count: u32 },
    Warning { remaining: Duration },
}

/// A hand-off whose new agent's first audio has not reached the caller yet.
#[derive(Debug)]
struct HandoffGap {
    from: String,
    to: String,
    requested: Duration,
}

/// One call's state.
#[derive(Debug)]
pub struct CallLogic {
    config: LogicConfig,
    state: CallState,
    effects: VecDeque<Effect>,
    awaiting: Option<Awaiting>,
    ended: bool,
    collector: Option<DigitCollector>,
    /// A hang-up or transfer waiting for the playout to drain, and when it stops waiting.
    pending_final: Option<(Final, Duration)>,
    /// Responses asked of the model and not yet done; the greeting (or apology) comes first.
    responding: u32,
    /// A provider that plays the audio itself is still playing it: its `response.done` comes
    /// before the caller has heard the end, so a hang-up waits for this too.
    provider_playing: bool,
    current_item: Option<Speaking>,
    /// Items cut by barge-in: their late audio is not played.
    dropped_items: HashSet<String>,
    turns: TurnClock,
    /// The agent failed mid-call: its hooks are no longer called.
    agent_failed: bool,
    /// Why the call runs on the fallback (agent or model failed), if it does.
    failure: Option<String>,
    transfer_target: Option<String>,
    /// Notifications for the agent, sent one hook at a time.
    notifications: VecDeque<Notification>,
    /// Since when the far end holds the call.
    held_since: Option<Duration>,
    /// The model session ended during the hold: a new one takes over on resume.
    model_lost_on_hold: bool,
    /// The conversation so far (final transcripts), for a model session that takes over.
    history: Vec<(Role, String)>,
    /// The model ended the call with the end-call tool and its goodbye has not started yet.
    awaiting_goodbye: bool,
    /// Everything was played; the pending hang-up or transfer waits until then for the far
    /// end to play it too.
    tail_until: Option<Duration>,
    /// The agent running the call.
    agent: String,
    /// A hand-off waiting for its greeting to be heard, to time the gap.
    handoff_gap: Option<HandoffGap>,
    /// Caller silence, the call's maximum length and fillers while tools run.
    clock: ConversationClock,
    /// Between the caller's speech-started and speech-stopped.
    caller_speaking: bool,
}

impl CallLogic {
    pub fn new(config: LogicConfig) -> CallLogic {
        let responding = u32::from(config.greeting);
        CallLogic {
            clock: ConversationClock::new(config.conversation.clone()),
            caller_speaking: false,
            agent: config.agent.clone(),
            handoff_gap: None,
            config,
            state: CallState::Starting,
            effects: VecDeque::new(),
            awaiting: None,
            ended: false,
            collector: None,
            pending_final: None,
            responding,
            provider_playing: false,
            current_item: None,
            dropped_items: HashSet::new(),
            turns: TurnClock::default(),
            agent_failed: false,
            failure: None,
            transfer_target: None,
            notifications: VecDeque::new(),
            held_since: None,
            model_lost_on_hold: false,
            history: Vec::new(),
            awaiting_goodbye: false,
            tail_until: None,
        }
    }

    /// The next effect to carry out, in order.
    pub fn poll(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When the call wants a [`Input::Tick`] if nothing else happens first.
    pub fn deadline(&self) -> Option<Duration> {
        let digits = self.collector.as_ref().map(DigitCollector::deadline);
        let drain = self.pending_final.as_ref().map(|(_, d)| *d);
        // The call's limits are due only where they can act (see `settle`): a deadline they
        // cannot act on would wake the call over and over.
        let limits = self
            .limits_can_act()
            .then(|| self.clock.deadline())
            .flatten();
        digits
            .into_iter()
            .chain(drain)
            .chain(self.tail_until)
            .chain(limits)
            .chain(self.clock.filler_deadline())
            .min()
    }

    /// The agent changed its call's conversation settings (`call.set-turn-options`).
    pub fn set_turn_limits(&mut self, limits: TurnLimits) {
        self.clock.set(limits);
    }

    /// Whether a limit of the call's clock can be acted on now: the call is up, nothing is
    /// awaited and no hang-up or transfer is under way.
    fn limits_can_act(&self) -> bool {
        !self.ended
            && self.awaiting.is_none()
            && self.pending_final.is_none()
            && self.state == CallState::Active
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Take one input at call time `now`; `playout` is what the caller hears of the agent.
    pub fn handle(&mut self, now: Duration, input: Input, playout: &mut dyn Playout) {
        if self.ended {
            return;
        }
        match input {
            Input::Start { actions, failure } => self.start(now, actions, failure),
            Input::FarEndHangup => {
                let reason = match self.transfer_target.take() {
                    Some(t) => EndReason::Transferred(t),
                    None => EndReason::CallerHangup,
                };
                self.end(Ending::new(reason, false));
            }
            Input::Digit { digit, source } => {
                self.clock.caller_active();
                self.on_digit(now, digit, source, playout)
            }
            Input::TransferProgress { code, reason } => {
                let target = self.transfer_target.clone().unwrap_or_default();
                self.record_transfer(&target, "progress", format!("{code} {reason}"));
            }
            Input::TransferOutcome {
                code,
                reason,
                success,
            } => self.on_transfer_outcome(code, reason, success),
            Input::PlayoutStarted { at } => self.on_playout_started(at),
            Input::ProviderAudioStarted => {
                self.goodbye_started();
                let turns = &mut self.turns;
                if turns.speech_stopped.is_some() && turns.first_model_audio.is_none() {
                    turns.first_model_audio = Some(now);
                }
                self.provider_playing = true;
                self.on_playout_started(now);
            }
            Input::ProviderAudioStopped => self.provider_playing = false,
            Input::MediaTimeout => {
                tracing::warn!("no media; ending the call");
                self.hang_up(Ending::new(EndReason::Timeout, false));
            }
            Input::LegLost(why) => self.end(Ending::new(EndReason::Failed(why), true)),
            Input::Hold(held) => self.on_hold(now, held, playout),
            Input::SessionTimer(note) => self.record(EventKind::SessionTimer {
                status: note.status.into(),
                interval_secs: note.interval_secs,
                refresher: note.refresher.into(),
                code: note.code,
            }),
            Input::TransferStarted(result) => self.on_transfer_started(result),
            Input::HandedOff(result) => self.on_handed_off(now, result),
            Input::SpeechStarted => {
                self.caller_speaking = true;
                self.clock.caller_active();
                // A caller who speaks up while a tool runs wants no more fillers.
                self.clock.fillers_stop();
                self.record(EventKind::SpeechStarted);
                self.notify(Notification::SpeechStarted);
                self.barge_in(playout);
            }
            Input::Machine(event) => self.on_machine(event),
            Input::SpeechStopped => {
                self.caller_speaking = false;
                self.clock.caller_active();
                self.record(EventKind::SpeechStopped);
                self.notify(Notification::SpeechStopped);
                self.turns.speech_stopped = Some(now);
                self.turns.first_model_audio = None;
                self.turns.stages = None;
            }
            Input::Transcript {
                role,
                text,
                is_final,
            } => {
                if is_final && !text.trim().is_empty() {
                    if role == Role::Caller {
                        self.clock.caller_active();
                    }
                    self.record(EventKind::Transcript {
                        role,
                        text: text.clone(),
                    });
                    self.history.push((role, text.clone()));
                    if !self.agent_failed {
                        self.hook(Hook::Transcript(role, text), Awaiting::Actions);
                    }
                }
            }
            Input::ToolCall {
                call_id,
                name,
                arguments,
            } => self.on_tool_call(now, call_id, name, arguments),
            Input::McpDone {
                call_id,
                route,
                result,
            } => self.on_mcp_done(now, call_id, route, result),
            Input::Usage(items) => self.record(EventKind::usage(items)),
            Input::StageLatency(stages) => self.turns.stages = Some(stages),
            Input::ResponseDone => self.responding = self.responding.saturating_sub(1),
            Input::ModelError(message) => self.record(EventKind::ModelError { message }),
            Input::ModelClosed(reason) => self.on_model_closed(now, reason),
            Input::ModelGone if self.held_since.is_some() => self.model_lost_on_hold = true,
            Input::ModelGone => self.hang_up(Ending::new(
                EndReason::Failed("model session ended".into()),
                true,
            )),
            Input::Hook(result) => self.on_hook_result(now, result),
            Input::Command(command) => self.on_command(now, command, playout),
            Input::Tick => {}
        }
        if self.awaiting.is_none() && !self.ended {
            self.settle(now, playout);
        }
        if !self.ended {
            self.filler(now);
            let quiet = self.limits_can_act()
                && !self.caller_speaking
                && self.held_since.is_none()
                && playout.is_empty()
                && !self.provider_playing;
            self.clock.quiet(now, quiet);
        }
    }

    /// Agent audio of model item `item_id` arrived; `host_in` is how long the last caller frame
    /// took on its way to the model. Returns whether to play it (audio of an item cut by
    /// barge-in is dropped).
    pub fn agent_audio(
        &mut self,
        now: Duration,
        item_id: &str,
        host_in: Duration,
        playout: &mut dyn Playout,
    ) -> bool {
        // On hold nothing is played; what the model still says is not heard.
        if self.dropped_items.contains(item_id) || self.held_since.is_some() {
            return false;
        }
        // The agent speaks: the caller's silence is not counted meanwhile.
        self.clock.quiet(now, false);
        if self.current_item.as_ref().map(|s| s.item_id.as_str()) != Some(item_id) {
            // Audio generated faster than real time arrives while earlier audio is still
            // queued; what this item has played is counted after that.
            self.goodbye_started();
            let lead_ms = playout.queued_ms();
            self.handoff_heard(now + Duration::from_millis(lead_ms));
            self.current_item = Some(Speaking {
                item_id: item_id.to_string(),
                lead_ms,
            });
            playout.mark();
            let turns = &mut self.turns;
            if turns.speech_stopped.is_some() && turns.first_model_audio.is_none() {
                if lead_ms == 0 {
                    turns.first_model_audio = Some(now);
                    turns.host_in = host_in;
                } else {
                    // The answer waits behind earlier audio: no turn to time.
                    turns.speech_stopped = None;
                }
            }
        }
        true
    }

    /// The model started the goodbye it owes after the end-call tool: the hang-up now waits
    /// for that response to be done and heard.
    fn goodbye_started(&mut self) {
        if self.awaiting_goodbye {
            self.awaiting_goodbye = false;
            self.responding += 1;
        }
    }

    fn record(&mut self, kind: EventKind) {
        self.effects.push_back(Effect::Record(kind));
    }

    fn set_state(&mut self, next: CallState) {
        if self.state.can_become(next) && self.state != next {
            self.state = next;
            self.record(EventKind::State { state: next });
        }
    }

    fn end(&mut self, ending: Ending) {
        self.ended = true;
        self.collector = None;
        self.pending_final = None;
        self.set_state(CallState::Ending);
        self.effects.push_back(Effect::End(ending));
    }

    fn hang_up(&mut self, ending: Ending) {
        self.effects.push_back(Effect::Hangup);
        self.end(ending);
    }

    /// Queue a notification for the agent, unless it already failed.
    fn notify(&mut self, notification: Notification) {
        if !self.agent_failed {
            self.notifications.push_back(notification);
        }
    }

    /// Answering-machine detection ran beside the call (it never held anything up): record
    /// what it found and tell the agent, which may leave a message after the beep or hang up.
    fn on_machine(&mut self, event: AmdEvent) {
        match event {
            AmdEvent::Verdict { verdict, at_ms } => {
                self.record(EventKind::MachineDetection { verdict, at_ms });
                self.notify(Notification::MachineDetected(verdict));
            }
            AmdEvent::Beep { at_ms, end_ms, hz } => {
                self.record(EventKind::VoicemailBeep { at_ms, end_ms, hz });
                self.notify(Notification::VoicemailBeep);
            }
        }
    }

    fn hook(&mut self, hook: Hook, awaiting: Awaiting) {
        self.effects.push_back(Effect::Hook(hook));
        self.awaiting = Some(awaiting);
    }

    fn start(&mut self, now: Duration, actions: Vec<Action>, failure: Option<String>) {
        self.set_state(CallState::Active);
        self.effects.push_back(Effect::StartRecording);
        self.agent_failed = failure.is_some();
        if self.config.outbound {
            self.notify(Notification::Progress(CallProgress::Answered));
        }
        if failure.is_some() {
            // The fallback session's apology.
            self.responding = 1;
            self.failure = failure;
            self.pending_final = Some((self.fallback_final(), now + self.config.drain_limit));
        } else {
            self.apply(now, actions);
        }
    }

    /// After the apology for a failed agent or model: the configured fallback transfer, or a
    /// hang-up.
    fn fallback_final(&self) -> Final {
        match &self.config.fallback_transfer {
            Some(target) => Final::Transfer(target.clone()),
            None => Final::Hangup(None),
        }
    }

    /// Carry out agent actions in order. Hang-up and transfer wait for queued speech; anything
    /// after them is ignored. Actions the leg cannot do are refused and recorded.
    fn apply(&mut self, now: Duration, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        self.record(EventKind::Actions {
            hook: "agent".into(),
            actions: actions.clone(),
        });
        for action in actions {
            let finish = match action {
                Action::Say(text) => {
                    self.say(text);
                    None
                }
                Action::Play(name) => {
                    tracing::warn!(asset = %name, "audio assets are not supported yet; skipping");
                    None
                }
                Action::SendDtmf(digits) => {
                    if self.allowed(Capability::SendDigits, || Action::SendDtmf(digits.clone())) {
                        self.effects.push_back(Effect::SendDigits(digits));
                    }
                    None
                }
                Action::CollectDigits(request) => {
                    if let Some(prompt) = &request.prompt {
                        self.say(prompt.clone());
                    }
                    self.collector = Some(DigitCollector::new(&request, now));
                    None
                }
                Action::Hangup => Some(Final::Hangup(None)),
                Action::Transfer(target) => Some(Final::Transfer(target)),
            };
            if let Some(finish) = finish {
                self.pending_final = Some((finish, now + self.config.drain_limit));
                return;
            }
        }
    }

    fn say(&mut self, text: String) {
        self.responding += 1;
        self.effects.push_back(Effect::Model(Command::Say(text)));
    }

    /// Whether the leg can do this; if not, the refusal is recorded.
    fn allowed(&mut self, capability: Capability, action: impl FnOnce() -> Action) -> bool {
        if self.config.capabilities.has(capability) {
            return true;
        }
        let reason = LegError::NotAllowed(capability).to_string();
        tracing::warn!(%reason, "agent action refused");
        let action = action();
        self.record(EventKind::ActionRefused {
            action: action.clone(),
            reason: reason.clone(),
        });
        self.notify(Notification::Refused { action, reason });
        false
    }

    /// What happens after each input once nothing is awaited: collected digits time out, and a
    /// hang-up or transfer goes ahead once the model is done and the caller heard it all.
    fn settle(&mut self, now: Duration, playout: &mut dyn Playout) {
        if let Some(notification) = self.notifications.pop_front() {
            self.hook(Hook::Event(notification), Awaiting::Actions);
            return;
        }
        if self.collector.as_ref().is_some_and(|c| now >= c.deadline()) {
            let digits = self.collector.take().expect("checked").expire();
            self.hook(Hook::Dtmf(digits), Awaiting::Actions);
            return;
        }
        let Some((_, deadline)) = &self.pending_final else {
            if self.limits_can_act()
                && let Some(due) = self.clock.due(now)
            {
                self.on_limit(now, due, playout);
            }
            return;
        };
        let drained = self.responding == 0
            && playout.is_empty()
            && !self.provider_playing
            && !self.awaiting_goodbye;
        if now < *deadline {
            if !drained {
                self.tail_until = None;
                return;
            }
            // The last packets are still in the far end's jitter buffer.
            let until = *self.tail_until.get_or_insert(now + self.config.final_tail);
            if now < until {
                return;
            }
        }
        self.tail_until = None;
        let (action, _) = self.pending_final.take().expect("checked");
        match action {
            Final::Hangup(Some(limit)) => self.hang_up(Ending::limit(limit)),
            Final::Hangup(None) => {
                // A mid-call agent fault hangs up through its apology actions.
                let agent_fault = self.agent_failed.then(|| "agent failed".to_string());
                let failure = self.failure.clone().or(agent_fault);
                self.hang_up(Ending::hanging_up(failure));
            }
            Final::Transfer(target) => self.start_transfer(now, target, true, playout),
        }
    }

    /// A limit of the call's clock is due. The agent hears of the caller's silence or of the
    /// coming end first and may speak itself; the hang-ups are the host's, after its goodbye.
    fn on_limit(&mut self, now: Duration, due: Due, playout: &mut dyn Playout) {
        match due {
            Due::Reprompt { silent, count } => {
                let ms = millis_u32(silent);
                self.prompt(
                    now,
                    Prompt::Reprompt { silent, count },
                    Notification::Silence { ms },
                );
            }
            Due::Warning { remaining } => {
                let ms = millis_u32(remaining);
                self.prompt(
                    now,
                    Prompt::Warning { remaining },
                    Notification::EndingSoon { ms },
                );
            }
            Due::SilenceHangup { silent } => {
                self.record(EventKind::SilenceHangup {
                    silent_ms: millis(silent),
                    reason: format!("no caller speech for {} s", silent.as_secs()),
                });
                let goodbye = self.clock.config().silence_goodbye.clone();
                self.say_goodbye(now, goodbye, Limit::Silence);
            }
            Due::MaxDuration => {
                self.record(EventKind::MaxDuration {
                    limit_ms: millis(now),
                });
                // Out of time: what the agent is saying is cut off for the goodbye.
                if let Some(cut) = self.cut_playout(playout) {
                    self.truncate(cut);
                }
                let goodbye = self.clock.config().max_call_goodbye.clone();
                self.say_goodbye(now, goodbye, Limit::MaxDuration);
            }
        }
    }

    /// Ask the agent first (`on-event`); a failed agent is not asked.
    fn prompt(&mut self, now: Duration, prompt: Prompt, notification: Notification) {
        if self.agent_failed {
            self.on_prompt_answered(now, prompt, Ok(Vec::new()));
            return;
        }
        self.hook(Hook::Event(notification), Awaiting::Prompt(prompt));
    }

    /// The agent answered a prompt of the call's clock: what it says stands; when it says
    /// nothing, the host says the configured words.
    fn on_prompt_answered(
        &mut self,
        now: Duration,
        prompt: Prompt,
        result: Result<Vec<Action>, AgentFault>,
    ) {
        let actions = result.unwrap_or_else(|fault| self.fault(fault));
        let by_agent = actions.iter().any(|a| matches!(a, Action::Say(_)));
        let by = if by_agent { "agent" } else { "host" }.to_string();
        let config = self.clock.config();
        let (event, words) = match prompt {
            Prompt::Reprompt { silent, count } => (
                EventKind::SilenceReprompt {
                    silent_ms: millis(silent),
                    count,
                    by,
                },
                config.reprompt.clone(),
            ),
            Prompt::Warning { remaining } => (
                EventKind::MaxDurationWarning {
                    remaining_ms: millis(remaining),
                    by,
                },
                config.max_call_warning.clone(),
            ),
        };
        self.record(event);
        if !by_agent {
            self.say(words);
        }
        self.apply(now, actions);
    }

    /// The call ends on its own clock: the goodbye, then the hang-up once it has been heard.
    fn say_goodbye(&mut self, now: Duration, goodbye: String, limit: Limit) {
        self.say(goodbye);
        self.pending_final = Some((Final::Hangup(Some(limit)), now + self.config.drain_limit));
    }

    /// A tool has run long enough for a filler: the model says it like any other words, so
    /// the caller can interrupt it and the model's conversation holds what the caller heard.
    fn filler(&mut self, now: Duration) {
        let Some((text, running)) = self.clock.filler(now) else {
            return;
        };
        self.record(EventKind::Filler {
            text: text.clone(),
            tool_ms: millis(running),
        });
        self.say(text);
    }

    fn record_transfer(&mut self, target: &str, status: &str, detail: String) {
        self.record(EventKind::Transfer {
            target: target.into(),
            status: status.into(),
            detail,
        });
    }

    fn start_transfer(
        &mut self,
        now: Duration,
        target: String,
        after_final: bool,
        playout: &mut dyn Playout,
    ) {
        if target.starts_with(AGENT_TARGET) {
            self.start_handoff(now, target, after_final, playout);
            return;
        }
        if !self.allowed(Capability::Transfer, || Action::Transfer(target.clone())) {
            let refusal = LegError::NotAllowed(Capability::Transfer).to_string();
            self.transfer_not_started(target, refusal, after_final);
            return;
        }
        self.set_state(CallState::Transferring);
        self.record_transfer(&target, "requested", String::new());
        self.effects.push_back(Effect::Transfer(target.clone()));
        self.awaiting = Some(Awaiting::TransferStart {
            target,
            after_final,
        });
    }

    /// Hand the call to another agent: the running one ends (`transferred("agent:NAME")`),
    /// the new one starts with the conversation so far, the model follows. What the old agent
    /// still had to say is dropped (an agent's own hand-off comes after its speech was heard;
    /// the API's is wanted now).
    fn start_handoff(
        &mut self,
        now: Duration,
        target: String,
        after_final: bool,
        playout: &mut dyn Playout,
    ) {
        if !self.allowed(Capability::Handoff, || Action::Transfer(target.clone())) {
            let refusal = LegError::NotAllowed(Capability::Handoff).to_string();
            self.transfer_not_started(target, refusal, after_final);
            return;
        }
        let to = target[AGENT_TARGET.len()..].to_string();
        self.set_state(CallState::Transferring);
        self.record_handoff(&to, "requested", String::new());
        if self.responding > 0 {
            self.effects
                .push_back(Effect::Model(Command::CancelResponse));
        }
        if let Some(cut) = self.cut_playout(playout) {
            self.truncate(cut);
        }
        self.effects
            .push_back(Effect::EndAgent(EndReason::Transferred(target)));
        self.effects.push_back(Effect::StartAgent(HandoffRequest {
            from: self.agent.clone(),
            to: to.clone(),
            summary: handoff::summary(&self.history),
            history: self.history.clone(),
        }));
        self.awaiting = Some(Awaiting::Handoff { to, requested: now });
    }

    fn record_handoff(&mut self, to: &str, status: &str, detail: String) {
        self.record(EventKind::Handoff {
            from: self.agent.clone(),
            to: to.into(),
            status: status.into(),
            detail,
            gap_ms: None,
        });
    }

    fn on_handed_off(&mut self, now: Duration, result: Result<HandedOff, HandoffFailed>) {
        let Some(Awaiting::Handoff { to, requested }) = self.awaiting.take() else {
            return;
        };
        self.set_state(CallState::Active);
        let started = match result {
            Ok(started) => started,
            Err(failed) => {
                tracing::warn!(error = %failed, agent = %to, "hand-off failed; the fallback follows");
                self.record_handoff(&to, "failed", failed.to_string());
                // The agent that handed over has ended: the apology stands in for both.
                let actions = match failed {
                    HandoffFailed::Fault(fault) => self.fault(fault),
                    _ => {
                        self.agent_failed = true;
                        self.notifications.clear();
                        self.config.fallback_actions.clone()
                    }
                };
                self.apply(now, actions);
                return;
            }
        };
        self.record_handoff(&to, HANDED_OFF, started.version);
        let from = std::mem::replace(&mut self.agent, to.clone());
        self.handoff_gap = Some(HandoffGap {
            from,
            to,
            requested,
        });
        self.agent_failed = false;
        self.config.end_call = started.end_call;
        self.config.mcp_tools = started.mcp_tools;
        self.clock.follow(started.conversation);
        if started.new_session {
            // The old session is closed: nothing more of it is played or awaited.
            self.current_item = None;
            self.provider_playing = false;
            self.responding = u32::from(started.greeting.is_some());
        } else if let Some(greeting) = started.greeting {
            self.say(greeting);
        }
        self.apply(now, started.actions);
    }

    /// The new agent's first audio goes out to the caller at `at` (after what is queued
    /// ahead of it): how long the hand-off took, as the caller hears it.
    fn handoff_heard(&mut self, at: Duration) {
        let Some(gap) = self.handoff_gap.take() else {
            return;
        };
        let gap_ms = at.saturating_sub(gap.requested).as_millis();
        self.record(EventKind::Handoff {
            from: gap.from,
            to: gap.to,
            status: "greeting-heard".into(),
            detail: String::new(),
            gap_ms: Some(u64::try_from(gap_ms).unwrap_or(u64::MAX)),
        });
    }

    fn on_transfer_started(&mut self, result: Result<(), String>) {
        let Some(Awaiting::TransferStart {
            target,
            after_final,
        }) = self.awaiting.take()
        else {
            return;
        };
        match result {
            Ok(()) => self.transfer_target = Some(target),
            Err(e) => {
                self.record_transfer(&target, "failed", e.clone());
                self.set_state(CallState::Active);
                self.transfer_not_started(target, e, after_final);
            }
        }
    }

    /// A transfer that could not start: the API hears of it in the record; an agent's transfer
    /// is reported to the agent; the fallback's leaves nothing to talk to.
    fn transfer_not_started(&mut self, target: String, error: String, after_final: bool) {
        if !after_final {
            tracing::warn!(%error, "transfer refused");
        } else if self.failure.is_some() {
            tracing::warn!(%error, "fallback transfer failed; hanging up");
            self.hang_up(Ending::hanging_up(self.failure.clone()));
        } else {
            self.hook(
                Hook::TransferResult {
                    target,
                    result: Err(error),
                },
                Awaiting::Actions,
            );
        }
    }

    fn on_transfer_outcome(&mut self, code: u16, reason: String, success: bool) {
        let target = self.transfer_target.clone().unwrap_or_default();
        let status = if success { "completed" } else { "failed" };
        self.record_transfer(&target, status, format!("{code} {reason}"));
        if success {
            self.hook(
                Hook::TransferResult {
                    target: target.clone(),
                    result: Ok(()),
                },
                Awaiting::Transferred { target },
            );
            return;
        }
        self.transfer_target = None;
        self.set_state(CallState::Active);
        if self.failure.is_some() {
            // The fallback transfer failed: nothing is left to talk to.
            self.hang_up(Ending::hanging_up(self.failure.clone()));
            return;
        }
        self.hook(
            Hook::TransferResult {
                target,
                result: Err(format!("{code} {reason}")),
            },
            Awaiting::Actions,
        );
    }

    fn on_digit(&mut self, now: Duration, digit: char, source: DigitSource, p: &mut dyn Playout) {
        self.record(EventKind::Dtmf {
            digits: digit.to_string(),
            source: source.as_str().into(),
        });
        if self.agent_failed || self.pending_final.is_some() {
            return;
        }
        // A key press interrupts the prompt being played, as callers expect of menus.
        self.barge_in(p);
        let digits = match self.collector.as_mut() {
            Some(c) => match c.press(digit, now) {
                Collected::More => return,
                Collected::Done(d) => {
                    self.collector = None;
                    d
                }
            },
            None => digit.to_string(),
        };
        self.hook(Hook::Dtmf(digits), Awaiting::Actions);
    }

    /// Stop agent audio at once, tell the model how much was heard, drop the rest.
    fn barge_in(&mut self, playout: &mut dyn Playout) {
        if self.clock.ending() {
            // The goodbye before the call's own hang-up is heard whole.
            return;
        }
        let Some(cut) = self.cut_playout(playout) else {
            return;
        };
        self.record(EventKind::BargeIn {
            played_ms: cut.played_ms,
            discarded_ms: cut.discarded_ms,
        });
        let heard_ms = u32::try_from(cut.played_ms).unwrap_or(u32::MAX);
        self.notify(Notification::BargeIn { heard_ms });
        self.truncate(cut);
    }

    /// Drop the agent audio not yet played: what of its item was played and dropped, or `None`
    /// when nothing was cut. The item is then truncated with [`CallLogic::truncate`].
    fn cut_playout(&mut self, playout: &mut dyn Playout) -> Option<Cut> {
        let speaking = self.current_item.take()?;
        // Audio of the interrupted item still on its way must not be played.
        self.dropped_items.insert(speaking.item_id.clone());
        if playout.queued_ms() == 0 {
            // The caller heard all of it (or the leg's provider truncates on its own).
            return None;
        }
        let cut = playout.interrupt();
        Some(Cut {
            item_id: speaking.item_id,
            played_ms: cut.played_ms.saturating_sub(speaking.lead_ms),
            discarded_ms: cut.discarded_ms,
        })
    }

    /// Tell the model the caller heard only what was played of the item.
    fn truncate(&mut self, cut: Cut) {
        self.effects.push_back(Effect::Model(Command::Truncate {
            item_id: cut.item_id,
            audio_end_ms: cut.played_ms,
        }));
    }

    /// On hold the agent neither hears nor speaks: the caller's audio (hold music, silence)
    /// goes nowhere, the answer being generated is cancelled and what is queued is dropped,
    /// the model told how much was heard. On resume the caller's audio goes to the model again.
    fn on_hold(&mut self, now: Duration, held: bool, playout: &mut dyn Playout) {
        match (held, self.held_since) {
            (true, None) => {
                self.held_since = Some(now);
                self.record(EventKind::Hold {
                    held: true,
                    held_ms: None,
                });
                self.effects.push_back(Effect::CallerAudio(false));
                if self.responding > 0 {
                    self.effects
                        .push_back(Effect::Model(Command::CancelResponse));
                }
                if let Some(cut) = self.cut_playout(playout) {
                    self.truncate(cut);
                }
            }
            (false, Some(since)) => {
                self.held_since = None;
                let held_ms = now.saturating_sub(since).as_millis();
                self.record(EventKind::Hold {
                    held: false,
                    held_ms: Some(u64::try_from(held_ms).unwrap_or(u64::MAX)),
                });
                if std::mem::take(&mut self.model_lost_on_hold) {
                    self.effects
                        .push_back(Effect::Reconnect(self.history.clone()));
                }
                self.effects.push_back(Effect::CallerAudio(true));
            }
            // Another re-INVITE in the same state (sendonly then inactive, say).
            _ => {}
        }
    }

    fn on_playout_started(&mut self, at: Duration) {
        let turns = &mut self.turns;
        let (Some(stopped), Some(first)) =
            (turns.speech_stopped.take(), turns.first_model_audio.take())
        else {
            return;
        };
        turns.turn += 1;
        let model_ms = first.saturating_sub(stopped).as_secs_f64() * 1000.0;
        let host_out_ms = at.saturating_sub(first).as_secs_f64() * 1000.0;
        let host_in_ms = turns.host_in.as_secs_f64() * 1000.0;
        let turn = turns.turn;
        let stages = turns.stages.take();
        self.record(EventKind::TurnLatency {
            turn,
            host_in_ms,
            model_ms,
            host_out_ms,
            total_ms: host_in_ms + model_ms + host_out_ms,
            stages,
        });
    }

    fn on_tool_call(&mut self, now: Duration, call_id: String, name: String, arguments: String) {
        // Every tool call ends in `tool_answered`.
        self.clock.tool_started(now);
        self.record(EventKind::ToolCall {
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: arguments.clone(),
        });
        if self.config.end_call && name == END_CALL_TOOL {
            // The model says goodbye in the response to this result; the hang-up waits until
            // that has been heard.
            let ending = r#"{"ending":true,"note":"Say a short goodbye now; the call ends when you finish."}"#;
            self.tool_answered(now, call_id, Ok(ending.into()), Vec::new());
            self.awaiting_goodbye = true;
            self.pending_final = Some((Final::Hangup(None), now + self.config.drain_limit));
            return;
        }
        if self.agent_failed {
            let unavailable = Err("the agent is unavailable".to_string());
            self.tool_answered(now, call_id, unavailable, Vec::new());
            return;
        }
        if let Some(route) = self.config.mcp_tools.get(&name).cloned() {
            // The agent may veto it first; the call itself then runs beside the call.
            let event = Notification::McpCall {
                server: route.server.clone(),
                tool: route.tool.clone(),
                arguments: arguments.clone(),
            };
            self.hook(
                Hook::McpCall(event),
                Awaiting::McpVeto {
                    call_id,
                    route,
                    arguments,
                },
            );
            return;
        }
        self.hook(
            Hook::ToolCall { name, arguments },
            Awaiting::Tool { call_id },
        );
    }

    /// The agent let the MCP call go ahead (it is started, and the call goes on meanwhile), or
    /// vetoed it (the model gets the reason as the error).
    fn on_mcp_decided(
        &mut self,
        now: Duration,
        call_id: String,
        route: McpRoute,
        arguments: String,
        result: Result<(Vec<Action>, Option<String>), AgentFault>,
    ) {
        match result {
            Ok((actions, Some(reason))) => {
                tracing::info!(server = %route.server, tool = %route.tool, %reason, "the agent vetoed an MCP call");
                self.tool_answered(now, call_id, Err(reason), actions);
            }
            Ok((actions, None)) => {
                self.effects.push_back(Effect::McpCall {
                    call_id,
                    route,
                    arguments,
                });
                self.apply(now, actions);
            }
            Err(fault) => {
                let apology = self.fault(fault);
                let failed = Err("the tool failed".to_string());
                self.tool_answered(now, call_id, failed, apology);
            }
        }
    }

    /// An MCP call finished: the result goes to the model, the use to the record, and the
    /// agent hears of it.
    fn on_mcp_done(
        &mut self,
        now: Duration,
        call_id: String,
        route: McpRoute,
        result: Result<String, String>,
    ) {
        self.record(EventKind::usage(vec![UsageItem {
            provider: route.server.clone(),
            stage: usage::MCP.into(),
            kind: usage::TOOL.into(),
            unit: usage::CALLS.into(),
            amount: 1.0,
        }]));
        self.notify(Notification::McpResult {
            server: route.server,
            tool: route.tool,
            outcome: result.clone(),
        });
        self.tool_answered(now, call_id, result, Vec::new());
    }

    /// The tool's result goes to the model, then the actions queued meanwhile run.
    fn tool_answered(
        &mut self,
        now: Duration,
        call_id: String,
        result: Result<String, String>,
        actions: Vec<Action>,
    ) {
        self.clock.tool_done();
        let (ok, output) = match result {
            Ok(s) => (true, s),
            Err(e) => (false, e),
        };
        self.record(EventKind::ToolResult {
            call_id: call_id.clone(),
            ok,
            output: output.clone(),
        });
        let output = if ok {
            output
        } else {
            serde_json::json!({ "error": output }).to_string()
        };
        self.effects
            .push_back(Effect::Model(Command::ToolResult { call_id, output }));
        self.apply(now, actions);
    }

    /// The agent failed: record it, and from now on the apology stands in for it.
    fn fault(&mut self, fault: AgentFault) -> Vec<Action> {
        self.record(EventKind::AgentFault { fault });
        self.agent_failed = true;
        self.notifications.clear();
        self.config.fallback_actions.clone()
    }

    fn on_hook_result(&mut self, now: Duration, result: HookResult) {
        match (self.awaiting.take(), result) {
            (Some(Awaiting::Actions), HookResult::Actions(result)) => {
                let actions = result.unwrap_or_else(|fault| self.fault(fault));
                self.apply(now, actions);
            }
            (Some(Awaiting::Tool { call_id }), HookResult::Tool(result)) => match result {
                Ok(out) => self.tool_answered(now, call_id, out.result, out.actions),
                Err(fault) => {
                    let apology = self.fault(fault);
                    let failed = Err("the tool failed".to_string());
                    self.tool_answered(now, call_id, failed, apology);
                }
            },
            (
                Some(Awaiting::McpVeto {
                    call_id,
                    route,
                    arguments,
                }),
                HookResult::Mcp(result),
            ) => self.on_mcp_decided(now, call_id, route, arguments, result),
            (Some(Awaiting::Prompt(prompt)), HookResult::Actions(result)) => {
                self.on_prompt_answered(now, prompt, result);
            }
            (Some(Awaiting::Transferred { target }), _) => {
                self.hang_up(Ending::new(EndReason::Transferred(target), false));
            }
            (awaiting, result) => {
                tracing::error!(?awaiting, ?result, "an agent answer nobody asked for");
            }
        }
    }

    fn on_model_closed(&mut self, now: Duration, reason: String) {
        if self.held_since.is_some() && self.failure.is_none() && self.pending_final.is_none() {
            // Nobody is talking to it: a new session takes over when the call resumes.
            tracing::info!(%reason, "model session closed during the hold; reconnecting on resume");
            self.record(EventKind::ModelError {
                message: format!("model session closed during the hold: {reason}"),
            });
            self.model_lost_on_hold = true;
            self.responding = 0;
            self.current_item = None;
            return;
        }
        if self.pending_final.is_some() || self.failure.is_some() {
            // The call is ending anyway (or only played an apology).
            self.hang_up(Ending::hanging_up(self.failure.clone()));
            return;
        }
        tracing::error!(%reason, "model session closed mid-call; playing the fallback");
        self.record(EventKind::ModelError {
            message: format!("model session closed: {reason}"),
        });
        self.failure = Some("model session closed".into());
        self.effects.push_back(Effect::ConnectFallback);
        self.responding = 1;
        // The closed session plays nothing more.
        self.provider_playing = false;
        self.pending_final = Some((self.fallback_final(), now + self.config.drain_limit));
    }

    fn on_command(
        &mut self,
        now: Duration,
        command: Option<CallCommand>,
        playout: &mut dyn Playout,
    ) {
        match command {
            Some(CallCommand::Hangup) => self.hang_up(Ending {
                requested: true,
                ..Ending::new(EndReason::AgentHangup, false)
            }),
            Some(CallCommand::Goodbye(text)) => {
                self.say(text);
                self.pending_final = Some((Final::Hangup(None), now + self.config.drain_limit));
            }
            // Not waiting for the playout: the operator wants it now.
            Some(CallCommand::Transfer(target)) => self.start_transfer(now, target, false, playout),
            Some(CallCommand::Cancelled) | None => {
                self.end(Ending::new(EndReason::CallerHangup, false))
            }
        }
    }
}

/// A duration in whole milliseconds, for the record.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration in whole milliseconds, for the agent's events.
fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
