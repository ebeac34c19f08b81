//! One call: the task that owns its dialog, media session, agent instance and model session,
//! and moves audio and events between them. Nothing in here is shared with other calls.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::audio::{decode_from_model, encode_for_model};
use super::digits::{Collected, DigitCollector};
use super::events::Recorder;
use super::{CallCommand, CallDeps};
use crate::domain::events::{CallState, EventKind};
use crate::domain::{Action, AgentFault, EndReason, Role, SessionConfig};
use crate::media::{MediaEvent, MediaSession, NegotiatedMedia, sdp};
use crate::model::{
    AudioFormat, Command, ModelEvent, ModelProvider, ModelSession, Role as ModelRole,
    SessionSettings, ToolSpec,
};
use crate::plugins::AgentSession;
use crate::sip::{Dialog, DialogEvent, DialogHandle};

/// Everything a running call owns.
pub(crate) struct Call {
    pub deps: Arc<CallDeps>,
    pub recorder: Recorder,
    pub call_id: String,
    pub agent: AgentSession,
    pub dialog: Dialog,
    pub media: MediaSession,
    pub local: sdp::LocalMedia,
    pub model: ModelSession,
    pub commands: mpsc::Receiver<CallCommand>,
    pub state: CallState,
    /// Hung up on request (the API): the agent hears `agent-hangup`, the record says why.
    pub hangup_requested: bool,
}

/// Audio formats for the model, given the call's codec: G.711 straight through when the
/// provider takes it, else PCM at the codec's rate when the provider takes that (nothing to
/// resample), else PCM at the highest rate the provider accepts.
pub(crate) fn model_formats(
    provider: &dyn ModelProvider,
    codec: crate::media::Codec,
) -> (AudioFormat, AudioFormat) {
    let support = provider.formats();
    let g711 = match codec {
        crate::media::Codec::Pcmu => Some(AudioFormat::Pcmu8k),
        crate::media::Codec::Pcma => Some(AudioFormat::Pcma8k),
        crate::media::Codec::Opus => None,
    };
    let at_codec_rate = AudioFormat::Pcm16 {
        rate: codec.clock_rate(),
    };
    let pick = |list: &[AudioFormat]| {
        let direct = g711
            .filter(|f| list.contains(f))
            .or_else(|| list.contains(&at_codec_rate).then_some(at_codec_rate));
        direct.unwrap_or_else(|| {
            list.iter()
                .copied()
                .filter(|f| matches!(f, AudioFormat::Pcm16 { .. }))
                .max_by_key(|f| f.sample_rate())
                .or_else(|| list.first().copied())
                .unwrap_or(AudioFormat::Pcm16 { rate: 16000 })
        })
    };
    (pick(&support.input), pick(&support.output))
}

/// The model session settings for an agent's session configuration.
pub(crate) fn settings_for(
    config: &SessionConfig,
    formats: (AudioFormat, AudioFormat),
) -> SessionSettings {
    SessionSettings {
        model: config.model.clone(),
        instructions: config.instructions.clone(),
        voice: config.voice.clone(),
        language: config.language.clone(),
        tools: config
            .tools
            .iter()
            .map(|t| ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: serde_json::from_str(&t.parameters)
                    .unwrap_or_else(|_| serde_json::json!({"type": "object"})),
            })
            .collect(),
        greeting: config.greeting.clone(),
        input_format: formats.0,
        output_format: formats.1,
        turn_detection: Default::default(),
        input_transcription: true,
    }
}

/// Connect to the configured model. A failure (refused, unreachable, or no session within the
/// provider's connect timeout) is recorded as a model error and gives `None`.
pub(crate) async fn connect_model(
    deps: &CallDeps,
    recorder: &Recorder,
    config: &SessionConfig,
    codec: crate::media::Codec,
) -> Option<ModelSession> {
    let formats = model_formats(deps.provider.as_ref(), codec);
    match deps.provider.connect(settings_for(config, formats)).await {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::error!(error = %e, "model connection failed");
            recorder.record(EventKind::ModelError {
                message: e.to_string(),
            });
            None
        }
    }
}

pub(crate) async fn connect_fallback(deps: &CallDeps, codec: crate::media::Codec) -> ModelSession {
    let apology = deps.registry.runtime().config().fallback.apology.clone();
    let config = SessionConfig {
        instructions: String::new(),
        greeting: Some(apology),
        voice: None,
        language: None,
        tools: Vec::new(),
        model: None,
    };
    let formats = model_formats(deps.fallback_provider.as_ref(), codec);
    match deps
        .fallback_provider
        .connect(settings_for(&config, formats))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // Without even local synthesis, an empty session keeps the call logic uniform: the
            // call hangs up at once.
            tracing::error!(error = %e, "fallback speech unavailable");
            let (commands, _rx) = mpsc::channel(1);
            let (_tx, events) = mpsc::channel(1);
            ModelSession {
                commands,
                events,
                input_format: formats.0,
                output_format: formats.1,
                loopback: false,
            }
        }
    }
}

/// The model item being played to the caller.
struct Speaking {
    item_id: String,
    /// Audio queued ahead of this item when it arrived: it starts playing once that has gone.
    lead_ms: u64,
}

/// Per-turn latency: caller end of speech → first agent audio packet on the wire.
#[derive(Default)]
struct TurnClock {
    turn: u32,
    speech_stopped: Option<Instant>,
    first_model_audio: Option<Instant>,
    host_in: Duration,
}

/// How the call ends when it hangs up itself: a failure (agent or model) or the agent's wish.
fn ending(failure: Option<String>) -> (EndReason, bool) {
    match failure {
        Some(why) => (EndReason::Failed(why), true),
        None => (EndReason::AgentHangup, false),
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

/// An action that waits until queued speech has been played.
enum Final {
    Hangup,
    Transfer(String),
}

impl Call {
    fn set_state(&mut self, next: CallState) {
        if self.state.can_become(next) && self.state != next {
            self.state = next;
            self.recorder.record(EventKind::State { state: next });
        }
    }

    /// Run the call until it ends. `start_actions` came from on-start; `failure` says why the
    /// agent or model already failed, in which case the call only plays the apology and hangs
    /// up.
    pub(crate) async fn run(mut self, start_actions: Vec<Action>, failure: Option<String>) {
        // Runs inside the task's `call` span (inbound or outbound), which carries the call id.
        self.set_state(CallState::Active);
        self.start_recording();
        let reason = self.event_loop(start_actions, failure).await;
        self.finish(reason).await;
    }

    /// Start the WAV recording when the configuration asks for it for this agent. A recording
    /// that cannot start is logged and the call goes on without it.
    fn start_recording(&self) {
        let config = &self.deps.config;
        let agent = self.agent.version().name();
        let wanted = self
            .deps
            .registry
            .runtime()
            .settings(agent)
            .and_then(|s| s.record)
            .unwrap_or(config.record);
        let Some(dir) = config.recordings_dir.as_ref().filter(|_| wanted) else {
            return;
        };
        let path = dir.join(format!("{}.wav", self.call_id));
        let started = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| self.media.start_recording(&path).map_err(|e| e.to_string()));
        match started {
            Ok(()) => self.recorder.record(EventKind::Recording {
                path: path.display().to_string(),
            }),
            Err(error) => tracing::warn!(%error, path = %path.display(), "recording did not start"),
        }
    }

    async fn event_loop(
        &mut self,
        start_actions: Vec<Action>,
        mut failure: Option<String>,
    ) -> (EndReason, bool) {
        let handle = self.dialog.handle();
        let mut media_events = self.media.take_events().expect("events taken once");
        let mut collector: Option<DigitCollector> = None;
        let mut pending_final: Option<(Final, Instant)> = None;
        let mut responding: u32 = u32::from(true); // the greeting (or apology) comes first
        let mut current_item: Option<Speaking> = None;
        let mut dropped_items: HashSet<String> = HashSet::new();
        let mut clock = TurnClock::default();
        let mut agent_failed = failure.is_some();
        let mut transfer_target: Option<String> = None;
        let drain_limit = Duration::from_secs(self.deps.config.drain_timeout_secs);
        // Processing time of the last caller frame on its way to the model.
        let host_in_ns = Arc::new(AtomicU64::new(0));
        self.connect_audio(&host_in_ns);

        if failure.is_some() {
            pending_final = Some((self.fallback_final(), Instant::now() + drain_limit));
        } else if let Some(f) = self
            .apply(start_actions, &mut collector, &mut responding)
            .await
        {
            pending_final = Some((f, Instant::now() + drain_limit));
        }

        loop {
            // Nothing polls: the loop wakes for events, or for the next digit or drain
            // deadline.
            let digit_deadline = collector.as_ref().map(DigitCollector::deadline);
            let wake = digit_deadline
                .into_iter()
                .chain(pending_final.as_ref().map(|(_, d)| *d))
                .min();
            tokio::select! {
                ev = self.dialog.recv() => match ev {
                    Some(DialogEvent::Ended(reason)) => {
                        tracing::debug!(?reason, "far end ended the call");
                        return match transfer_target.take() {
                            Some(t) => (EndReason::Transferred(t), false),
                            None => (EndReason::CallerHangup, false),
                        };
                    }
                    Some(DialogEvent::Dtmf { digit, duration_ms: _ }) => {
                        self.on_digit(digit, "sip-info", &mut collector, &mut responding, &mut pending_final, &mut agent_failed, &mut current_item, &mut dropped_items).await;
                    }
                    Some(DialogEvent::Reinvite(req)) => self.on_reinvite(req),
                    Some(DialogEvent::TransferRequested { target, .. }) => {
                        // Calls are not bridged by this host; the far end hears the refusal.
                        tracing::warn!(%target, "REFER from the far end is not carried out in agent calls");
                        let _ = handle.report_transfer(603, "Decline").await;
                    }
                    Some(DialogEvent::TransferProgress { code, reason }) => {
                        self.recorder.record(EventKind::Transfer { target: transfer_target.clone().unwrap_or_default(), status: "progress".into(), detail: format!("{code} {reason}") });
                    }
                    Some(DialogEvent::TransferOutcome { code, reason, success }) => {
                        let target = transfer_target.clone().unwrap_or_default();
                        self.recorder.record(EventKind::Transfer { target: target.clone(), status: if success { "completed" } else { "failed" }.into(), detail: format!("{code} {reason}") });
                        if success {
                            let _ = self.agent.transfer_result(&target, Ok(())).await;
                            let _ = handle.hangup().await;
                            return (EndReason::Transferred(target), false);
                        }
                        transfer_target = None;
                        self.set_state(CallState::Active);
                        if failure.is_some() {
                            // The fallback transfer failed: nothing is left to talk to.
                            let _ = handle.hangup().await;
                            return ending(failure);
                        }
                        let actions = self.agent.transfer_result(&target, Err(format!("{code} {reason}"))).await;
                        if let Some(f) = self.after_hook(actions, &mut collector, &mut responding, &mut agent_failed).await {
                            pending_final = Some((f, Instant::now() + drain_limit));
                        }
                    }
                    None => return (EndReason::Failed("signalling ended".into()), true),
                },
                ev = media_events.recv() => match ev {
                    // Frames reported before the sink took over.
                    Some(MediaEvent::Audio(frame)) => {
                        to_model(&self.model.commands, self.model.input_format, &frame.samples);
                    }
                    Some(MediaEvent::Dtmf(ev)) => {
                        self.on_digit(ev.digit, "rfc4733", &mut collector, &mut responding, &mut pending_final, &mut agent_failed, &mut current_item, &mut dropped_items).await;
                    }
                    Some(MediaEvent::Timeout { silent_for }) => {
                        tracing::warn!(?silent_for, "no media; ending the call");
                        let _ = handle.hangup().await;
                        return (EndReason::Timeout, false);
                    }
                    Some(MediaEvent::PlayoutStarted { at }) => {
                        if let (Some(stopped), Some(first)) = (clock.speech_stopped.take(), clock.first_model_audio.take()) {
                            clock.turn += 1;
                            let model_ms = first.duration_since(stopped).as_secs_f64() * 1000.0;
                            let host_out_ms = at.saturating_duration_since(first).as_secs_f64() * 1000.0;
                            let host_in_ms = clock.host_in.as_secs_f64() * 1000.0;
                            self.recorder.record(EventKind::TurnLatency { turn: clock.turn, host_in_ms, model_ms, host_out_ms, total_ms: host_in_ms + model_ms + host_out_ms });
                        }
                    }
                    // The drain check below sees the empty queue.
                    Some(MediaEvent::Stats(_) | MediaEvent::PlayoutIdle) => {}
                    None => return (EndReason::Failed("media ended".into()), true),
                },
                ev = self.model.events.recv() => match ev {
                    Some(ModelEvent::Audio { item_id, data, format }) => {
                        if dropped_items.contains(&item_id) {
                            continue;
                        }
                        if current_item.as_ref().map(|s| s.item_id.as_str()) != Some(item_id.as_str()) {
                            // Audio generated faster than real time arrives while earlier audio
                            // is still queued; what this item has played is counted after that.
                            let lead_ms = self.media.queued_ms();
                            current_item = Some(Speaking { item_id, lead_ms });
                            self.media.mark_playout();
                            if clock.speech_stopped.is_some() && clock.first_model_audio.is_none() {
                                if lead_ms == 0 {
                                    clock.first_model_audio = Some(Instant::now());
                                    clock.host_in = Duration::from_nanos(host_in_ns.load(Ordering::Relaxed));
                                } else {
                                    // The answer waits behind earlier audio: no turn to time.
                                    clock.speech_stopped = None;
                                }
                            }
                        }
                        let pcm = decode_from_model(&data, format);
                        if let Err(e) = self.media.queue_audio(&pcm, format.sample_rate()) {
                            tracing::warn!(error = %e, "queueing agent audio failed");
                        }
                    }
                    Some(ModelEvent::SpeechStarted { .. }) => {
                        self.recorder.record(EventKind::SpeechStarted);
                        self.barge_in(&mut current_item, &mut dropped_items).await;
                    }
                    Some(ModelEvent::SpeechStopped { .. }) => {
                        self.recorder.record(EventKind::SpeechStopped);
                        clock.speech_stopped = Some(Instant::now());
                        clock.first_model_audio = None;
                    }
                    Some(ModelEvent::Transcript { role, text, is_final, .. }) => {
                        if is_final && !text.trim().is_empty() {
                            let role = match role { ModelRole::Caller => Role::Caller, ModelRole::Agent => Role::Agent };
                            self.recorder.record(EventKind::Transcript { role, text: text.clone() });
                            if !agent_failed {
                                let actions = self.agent.transcript(role, &text, true).await;
                                if let Some(f) = self.after_hook(actions, &mut collector, &mut responding, &mut agent_failed).await {
                                    pending_final = Some((f, Instant::now() + drain_limit));
                                }
                            }
                        }
                    }
                    Some(ModelEvent::ToolCall { call_id, name, arguments }) => {
                        self.recorder.record(EventKind::ToolCall { call_id: call_id.clone(), name: name.clone(), arguments: arguments.clone() });
                        let (ok, output, actions) = if agent_failed {
                            (false, "the agent is unavailable".to_string(), Vec::new())
                        } else {
                            match self.agent.tool_call(&name, &arguments).await {
                                Ok(out) => match out.result {
                                    Ok(s) => (true, s, out.actions),
                                    Err(e) => (false, e, out.actions),
                                },
                                Err(fault) => {
                                    let apology = self.fault(fault, &mut agent_failed);
                                    (false, "the tool failed".to_string(), apology)
                                }
                            }
                        };
                        self.recorder.record(EventKind::ToolResult { call_id: call_id.clone(), ok, output: output.clone() });
                        let output = if ok { output } else { serde_json::json!({ "error": output }).to_string() };
                        let _ = self.model.send(Command::ToolResult { call_id, output }).await;
                        if let Some(f) = self.apply(actions, &mut collector, &mut responding).await {
                            pending_final = Some((f, Instant::now() + drain_limit));
                        }
                    }
                    Some(ModelEvent::Usage(u)) => {
                        self.recorder.record(EventKind::usage(u.items()));
                    }
                    Some(ModelEvent::ResponseDone { .. }) => responding = responding.saturating_sub(1),
                    Some(ModelEvent::GoingAway { .. }) => {}
                    Some(ModelEvent::Error(e)) => {
                        self.recorder.record(EventKind::ModelError { message: e.to_string() });
                    }
                    Some(ModelEvent::Closed(reason)) => {
                        if pending_final.is_some() || failure.is_some() {
                            // The call is ending anyway (or only played an apology).
                            let _ = handle.hangup().await;
                            return ending(failure);
                        }
                        tracing::error!(?reason, "model session closed mid-call; playing the fallback");
                        self.recorder.record(EventKind::ModelError { message: format!("model session closed: {reason:?}") });
                        failure = Some("model session closed".into());
                        self.model = connect_fallback(&self.deps, self.media_codec()).await;
                        self.connect_audio(&host_in_ns);
                        responding = 1;
                        pending_final = Some((self.fallback_final(), Instant::now() + drain_limit));
                    }
                    None => {
                        let _ = handle.hangup().await;
                        return (EndReason::Failed("model session ended".into()), true);
                    }
                },
                cmd = self.commands.recv() => match cmd {
                    Some(CallCommand::Hangup) => {
                        let _ = handle.hangup().await;
                        self.hangup_requested = true;
                        return (EndReason::AgentHangup, false);
                    }
                    Some(CallCommand::Transfer(target)) => {
                        match self.start_transfer(&handle, &target).await {
                            Ok(()) => transfer_target = Some(target),
                            Err(e) => tracing::warn!(error = %e, "transfer refused"),
                        }
                    }
                    Some(CallCommand::Cancelled) | None => {
                        return (EndReason::CallerHangup, false);
                    }
                },
                () = sleep_until_some(wake) => {}
            }
            if let Some(deadline) = digit_deadline
                && Instant::now() >= deadline
                && let Some(c) = collector.take()
            {
                let digits = c.expire();
                if let Some(f) = self
                    .deliver_digits(&digits, &mut collector, &mut responding, &mut agent_failed)
                    .await
                {
                    pending_final = Some((f, Instant::now() + drain_limit));
                }
            }
            // Hang-up and transfer wait until the model is done and the caller heard it all.
            if let Some((_, deadline)) = &pending_final {
                let drained = responding == 0 && self.media.playout_is_empty();
                if drained || Instant::now() >= *deadline {
                    let (action, _) = pending_final.take().expect("checked");
                    match action {
                        Final::Hangup => {
                            let _ = handle.hangup().await;
                            // A mid-call agent fault hangs up through its apology actions.
                            let agent_fault = agent_failed.then(|| "agent failed".to_string());
                            return ending(failure.or(agent_fault));
                        }
                        Final::Transfer(target) => {
                            match self.start_transfer(&handle, &target).await {
                                Ok(()) => transfer_target = Some(target),
                                Err(e) if failure.is_some() => {
                                    // The fallback transfer failed: nothing is left to talk to.
                                    tracing::warn!(error = %e, "fallback transfer failed; hanging up");
                                    let _ = handle.hangup().await;
                                    return ending(failure);
                                }
                                Err(e) => {
                                    let actions = self
                                        .agent
                                        .transfer_result(&target, Err(e.to_string()))
                                        .await;
                                    if let Some(f) = self
                                        .after_hook(
                                            actions,
                                            &mut collector,
                                            &mut responding,
                                            &mut agent_failed,
                                        )
                                        .await
                                    {
                                        pending_final = Some((f, Instant::now() + drain_limit));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Caller audio goes from the media thread straight to the model session, or, when the
    /// session would only send it back, straight back to the caller.
    fn connect_audio(&self, host_in_ns: &Arc<AtomicU64>) {
        if self.model.loopback {
            if let Err(e) = self.media.loop_back() {
                tracing::debug!(error = %e, "media ended before its audio loopback was set");
            }
            return;
        }
        let commands = self.model.commands.clone();
        let format = self.model.input_format;
        let host_in_ns = host_in_ns.clone();
        let sink = Box::new(move |samples: &[i16]| {
            let t = Instant::now();
            to_model(&commands, format, samples);
            host_in_ns.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        });
        if let Err(e) = self.media.set_audio_sink(sink) {
            tracing::debug!(error = %e, "media ended before its audio sink was set");
        }
    }

    /// After the apology for a failed agent or model: the configured fallback transfer, or a
    /// hang-up.
    fn fallback_final(&self) -> Final {
        match &self.deps.registry.runtime().config().fallback.transfer {
            Some(target) => Final::Transfer(target.clone()),
            None => Final::Hangup,
        }
    }

    fn media_codec(&self) -> crate::media::Codec {
        self.local
            .codecs
            .first()
            .copied()
            .unwrap_or(crate::media::Codec::Pcmu)
    }

    async fn start_transfer(
        &mut self,
        handle: &DialogHandle,
        target: &str,
    ) -> Result<(), crate::sip::SipError> {
        self.set_state(CallState::Transferring);
        self.recorder.record(EventKind::Transfer {
            target: target.into(),
            status: "requested".into(),
            detail: String::new(),
        });
        let result = handle.refer(target).await;
        if let Err(e) = &result {
            self.recorder.record(EventKind::Transfer {
                target: target.into(),
                status: "failed".into(),
                detail: e.to_string(),
            });
            self.set_state(CallState::Active);
        }
        result
    }

    /// Stop agent audio at once, tell the model how much was heard, drop the rest.
    async fn barge_in(
        &mut self,
        current_item: &mut Option<Speaking>,
        dropped: &mut HashSet<String>,
    ) {
        let Some(speaking) = current_item.take() else {
            return;
        };
        // Deltas of the interrupted item still on their way must not be played.
        dropped.insert(speaking.item_id.clone());
        if self.media.queued_ms() == 0 {
            // The caller heard all of it: nothing to cut, and the model already assumes so.
            return;
        }
        let report = self.media.flush_playout();
        let played_ms = report.played_ms.saturating_sub(speaking.lead_ms);
        self.recorder.record(EventKind::BargeIn {
            played_ms,
            discarded_ms: report.discarded_ms,
        });
        let _ = self
            .model
            .send(Command::Truncate {
                item_id: speaking.item_id,
                audio_end_ms: played_ms,
            })
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_digit(
        &mut self,
        digit: char,
        source: &str,
        collector: &mut Option<DigitCollector>,
        responding: &mut u32,
        pending_final: &mut Option<(Final, Instant)>,
        agent_failed: &mut bool,
        current_item: &mut Option<Speaking>,
        dropped: &mut HashSet<String>,
    ) {
        self.recorder.record(EventKind::Dtmf {
            digits: digit.to_string(),
            source: source.into(),
        });
        if *agent_failed || pending_final.is_some() {
            return;
        }
        // A key press interrupts the prompt being played, as callers expect of menus.
        self.barge_in(current_item, dropped).await;
        let digits = match collector.as_mut() {
            Some(c) => match c.press(digit, Instant::now()) {
                Collected::More => return,
                Collected::Done(d) => {
                    *collector = None;
                    d
                }
            },
            None => digit.to_string(),
        };
        if let Some(f) = self
            .deliver_digits(&digits, collector, responding, agent_failed)
            .await
        {
            *pending_final = Some((
                f,
                Instant::now() + Duration::from_secs(self.deps.config.drain_timeout_secs),
            ));
        }
    }

    async fn deliver_digits(
        &mut self,
        digits: &str,
        collector: &mut Option<DigitCollector>,
        responding: &mut u32,
        agent_failed: &mut bool,
    ) -> Option<Final> {
        let actions = self.agent.dtmf(digits).await;
        self.after_hook(actions, collector, responding, agent_failed)
            .await
    }

    fn fault(&mut self, fault: AgentFault, agent_failed: &mut bool) -> Vec<Action> {
        self.recorder.record(EventKind::AgentFault { fault });
        *agent_failed = true;
        self.deps.registry.runtime().fallback_actions()
    }

    async fn after_hook(
        &mut self,
        result: Result<Vec<Action>, AgentFault>,
        collector: &mut Option<DigitCollector>,
        responding: &mut u32,
        agent_failed: &mut bool,
    ) -> Option<Final> {
        let actions = match result {
            Ok(a) => a,
            Err(fault) => self.fault(fault, agent_failed),
        };
        self.apply(actions, collector, responding).await
    }

    /// Carry out agent actions in order. Hang-up and transfer wait for queued speech; anything
    /// after them is ignored.
    async fn apply(
        &mut self,
        actions: Vec<Action>,
        collector: &mut Option<DigitCollector>,
        responding: &mut u32,
    ) -> Option<Final> {
        if actions.is_empty() {
            return None;
        }
        self.recorder.record(EventKind::Actions {
            hook: "agent".into(),
            actions: actions.clone(),
        });
        for action in actions {
            match action {
                Action::Say(text) => {
                    *responding += 1;
                    let _ = self.model.send(Command::Say(text)).await;
                }
                Action::Play(name) => {
                    tracing::warn!(asset = %name, "audio assets are not supported yet; skipping")
                }
                Action::SendDtmf(digits) => {
                    if let Err(e) = self.media.send_dtmf(&digits, 100) {
                        tracing::warn!(error = %e, "sending DTMF failed");
                    }
                }
                Action::CollectDigits(request) => {
                    if let Some(prompt) = &request.prompt {
                        *responding += 1;
                        let _ = self.model.send(Command::Say(prompt.clone())).await;
                    }
                    *collector = Some(DigitCollector::new(&request, Instant::now()));
                }
                Action::Hangup => return Some(Final::Hangup),
                Action::Transfer(target) => return Some(Final::Transfer(target)),
            }
        }
        None
    }

    fn on_reinvite(&mut self, req: crate::sip::ReinviteRequest) {
        match sdp::answer_reoffer(req.remote_sdp.as_deref(), &mut self.local) {
            Ok((reply, negotiated)) => {
                if let Some(negotiated) = negotiated {
                    self.apply_media(&negotiated);
                }
                req.accept(reply);
            }
            Err(e) => req.reject(e.sip_status()),
        }
    }

    fn apply_media(&mut self, negotiated: &NegotiatedMedia) {
        if let Err(e) = self.media.update(negotiated) {
            tracing::warn!(error = %e, "applying the re-INVITE to media failed");
        }
    }

    async fn finish(mut self, (reason, abnormal): (EndReason, bool)) {
        self.set_state(CallState::Ending);
        if let Err(fault) = self.agent.end(&reason).await {
            self.recorder.record(EventKind::AgentFault { fault });
        }
        let _ = self.model.commands.try_send(Command::Close);
        let Call {
            media,
            recorder,
            deps,
            call_id,
            hangup_requested,
            ..
        } = self;
        let stats = media.close().await;
        tracing::info!(?reason, %stats, "call ended");
        recorder.record(EventKind::MediaStats {
            packets_received: stats.packets_received,
            packets_expected: stats.packets_expected,
            packets_lost: stats.packets_lost,
            jitter_ms: stats.jitter_ms,
            concealed_ms: stats.concealed_ms,
        });
        let text = match &reason {
            EndReason::CallerHangup => "caller-hangup".to_string(),
            EndReason::AgentHangup if hangup_requested => "hangup-requested".to_string(),
            EndReason::AgentHangup => "agent-hangup".to_string(),
            EndReason::Transferred(t) => format!("transferred to {t}"),
            EndReason::Timeout => "timeout".to_string(),
            EndReason::Failed(why) => format!("failed: {why}"),
        };
        recorder.record(EventKind::Ended {
            reason: text,
            abnormal,
        });
        recorder.record(EventKind::State {
            state: CallState::Ended,
        });
        deps.forget(&call_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use crate::model::config::{OfflineConfig, OpenAiConfig, Secret};
    use crate::model::offline::OfflineProvider;
    use crate::model::openai::OpenAiProvider;

    #[test]
    fn model_formats_avoid_resampling_where_the_provider_allows() {
        let openai = OpenAiProvider::new(OpenAiConfig::new(Secret::new("k")));
        assert_eq!(
            model_formats(&openai, Codec::Pcmu),
            (AudioFormat::Pcmu8k, AudioFormat::Pcmu8k)
        );
        let pcm24 = AudioFormat::Pcm16 { rate: 24000 };
        assert_eq!(model_formats(&openai, Codec::Opus), (pcm24, pcm24));
        // Offline: caller audio and speech at the codec's rate, both ways.
        let offline = OfflineProvider::new(OfflineConfig::default());
        let pcm8 = AudioFormat::Pcm16 { rate: 8000 };
        assert_eq!(model_formats(&offline, Codec::Pcma), (pcm8, pcm8));
        let pcm48 = AudioFormat::Pcm16 { rate: 48000 };
        assert_eq!(model_formats(&offline, Codec::Opus), (pcm48, pcm48));
    }
}
