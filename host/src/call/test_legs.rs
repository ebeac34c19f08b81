//! Two legs that are not SIP prove the seam: an in-memory audio leg (frames through us, a
//! playout the test controls) and an events-only leg (no frames; the provider truncates its own
//! audio; transfer and hang-up by callback). Both run greeting, tool call, barge-in and
//! transfer through the same call task and logic as the SIP leg, with a scripted agent and a
//! scripted model session.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::CallCommand;
use super::agent::CallAgent;
use super::events::{CallSink, EventBus};
use super::leg::{
    CallerAudio, Capabilities, Capability, DigitSource, Interrupted, Leg, LegAudio, LegError,
    LegEvent, LegFacts, NoPlayout, Playout,
};
use super::logic::{CallLogic, Hook, HookResult, LogicConfig};
use super::task::CallTask;
use crate::domain::agent_event::AgentRequest;
use crate::domain::conversation::ConversationConfig;
use crate::domain::events::{CallEvent, EventKind};
use crate::domain::{Action, AgentFault, EndReason};
use crate::media::MediaStats;
use crate::model::{AudioFormat, Command, ModelEvent, ModelSession, ResponseStatus};
use crate::plugins::ToolOutcome;

/// What a call did to its leg, in order.
#[derive(Debug, Clone, PartialEq)]
enum Done {
    Routed,
    Played(usize),
    Interrupted,
    Recorded,
    Digits(String),
    Transfer(String),
    Hangup,
    Closed,
}

type Log = Arc<Mutex<Vec<Done>>>;

fn push(log: &Log, done: Done) {
    log.lock().unwrap().push(done);
}

/// The test's view of the audio leg's playout queue.
#[derive(Default)]
struct Queue {
    queued_ms: u64,
    played_ms: u64,
}

struct AudioLeg {
    facts: LegFacts,
    events: mpsc::UnboundedReceiver<LegEvent>,
    log: Log,
    queue: Arc<Mutex<Queue>>,
}

impl Playout for AudioLeg {
    fn queued_ms(&self) -> u64 {
        self.queue.lock().unwrap().queued_ms
    }
    fn is_empty(&self) -> bool {
        self.queued_ms() == 0
    }
    fn mark(&mut self) {}
    fn interrupt(&mut self) -> Interrupted {
        push(&self.log, Done::Interrupted);
        let mut q = self.queue.lock().unwrap();
        Interrupted {
            played_ms: q.played_ms,
            discarded_ms: std::mem::take(&mut q.queued_ms),
        }
    }
}

impl LegAudio for AudioLeg {
    fn route_caller(&mut self, _to: CallerAudio) -> Result<(), LegError> {
        push(&self.log, Done::Routed);
        Ok(())
    }
    fn play(&mut self, pcm: &[i16], _rate: u32) -> Result<(), LegError> {
        push(&self.log, Done::Played(pcm.len()));
        Ok(())
    }
    fn record(&mut self, _path: &Path) -> Result<(), LegError> {
        push(&self.log, Done::Recorded);
        Ok(())
    }
}

impl Leg for AudioLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Audio,
            Capability::SendDigits,
            Capability::Transfer,
            Capability::Handoff,
        ])
    }
    async fn next_event(&mut self) -> LegEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }
    async fn hangup(&mut self) {
        push(&self.log, Done::Hangup);
    }
    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        push(&self.log, Done::Transfer(target.into()));
        Ok(())
    }
    fn send_digits(&mut self, digits: &str) -> Result<(), LegError> {
        push(&self.log, Done::Digits(digits.into()));
        Ok(())
    }
    fn playout(&mut self) -> &mut dyn Playout {
        self
    }
    fn audio(&mut self) -> Option<&mut dyn LegAudio> {
        Some(self)
    }
    async fn close(self) -> Option<MediaStats> {
        push(&self.log, Done::Closed);
        Some(MediaStats::default())
    }
}

type Callback<T> = Box<dyn FnMut(&str) -> T + Send>;

/// A leg whose provider owns the audio: events only, actions by callback.
struct EventsLeg {
    facts: LegFacts,
    capabilities: Capabilities,
    events: mpsc::UnboundedReceiver<LegEvent>,
    on_transfer: Callback<Result<(), LegError>>,
    on_hangup: Callback<()>,
    playout: NoPlayout,
}

impl Leg for EventsLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    async fn next_event(&mut self) -> LegEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }
    async fn hangup(&mut self) {
        (self.on_hangup)("");
    }
    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        (self.on_transfer)(target)
    }
    fn send_digits(&mut self, _digits: &str) -> Result<(), LegError> {
        Err(LegError::NotAllowed(Capability::SendDigits))
    }
    fn playout(&mut self) -> &mut dyn Playout {
        &mut self.playout
    }
    fn audio(&mut self) -> Option<&mut dyn LegAudio> {
        None
    }
    async fn close(self) -> Option<MediaStats> {
        None
    }
}

/// An agent that answers each hook from a script and remembers what it was asked.
struct ScriptedAgent {
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl CallAgent for ScriptedAgent {
    async fn hook(&mut self, hook: Hook) -> HookResult {
        self.hooks.lock().unwrap().push(hook.clone());
        match hook {
            Hook::ToolCall { name, .. } if name == "hours" => HookResult::Tool(Ok(ToolOutcome {
                result: Ok(r#"{"open":"9-17"}"#.into()),
                actions: Vec::new(),
            })),
            Hook::ToolCall { .. } => HookResult::Tool(Ok(ToolOutcome {
                result: Err("no such tool".into()),
                actions: Vec::new(),
            })),
            Hook::Dtmf(d) if d == "0" => {
                HookResult::Actions(Ok(vec![Action::Transfer("sip:desk@example.org".into())]))
            }
            Hook::Dtmf(d) if d == "9" => {
                HookResult::Actions(Ok(vec![Action::SendDtmf("1".into())]))
            }
            _ => HookResult::Actions(Ok(Vec::new())),
        }
    }
    async fn end(&mut self, _reason: &EndReason) -> Result<(), AgentFault> {
        Ok(())
    }
    fn take_requests(&mut self) -> Vec<AgentRequest> {
        let hooks = self.hooks.lock().unwrap();
        // The agent settles the outcome once its transfer went through.
        let transferred = hooks
            .iter()
            .any(|h| matches!(h, Hook::TransferResult { result: Ok(()), .. }));
        if transferred {
            vec![AgentRequest::SetOutcome("sent to the desk".into())]
        } else {
            Vec::new()
        }
    }
}

struct Sink(Arc<Mutex<Vec<EventKind>>>);

impl CallSink for Sink {
    fn record(&self, event: CallEvent) {
        self.0.lock().unwrap().push(event.kind);
    }
}

/// The test's ends of a running call.
struct Rig {
    leg: mpsc::UnboundedSender<LegEvent>,
    model: mpsc::Sender<ModelEvent>,
    to_model: mpsc::Receiver<Command>,
    commands: mpsc::Sender<CallCommand>,
    events: Arc<Mutex<Vec<EventKind>>>,
    hooks: Arc<Mutex<Vec<Hook>>>,
    call: tokio::task::JoinHandle<()>,
}

fn start<L: Leg + 'static>(
    make_leg: impl FnOnce(mpsc::UnboundedReceiver<LegEvent>) -> L,
    recording: bool,
) -> Rig {
    let (leg_tx, leg_rx) = mpsc::unbounded_channel();
    let (model_tx, model_rx) = mpsc::channel(64);
    let (command_tx, command_rx) = mpsc::channel(64);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let bus = EventBus::new(|_live| Arc::new(Sink(sink)));
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let leg = make_leg(leg_rx);
    let format = AudioFormat::Pcm16 { rate: 8000 };
    let task = CallTask {
        recorder: bus.recorder("c1"),
        logic: CallLogic::new(LogicConfig {
            drain_limit: Duration::from_secs(30),
            final_tail: Duration::ZERO,
            fallback_transfer: None,
            fallback_actions: vec![Action::Say("Sorry.".into()), Action::Hangup],
            capabilities: leg.capabilities(),
            outbound: false,
            end_call: false,
            agent: "scripted".into(),
            mcp_tools: Default::default(),
            greeting: true,
            conversation: ConversationConfig::off(),
        }),
        leg,
        agent: ScriptedAgent {
            hooks: hooks.clone(),
        },
        model: ModelSession {
            commands: command_tx,
            events: model_rx,
            input_format: format,
            output_format: format,
            loopback: false,
        },
        commands: commands_rx,
        recording: recording.then(|| std::env::temp_dir().join("never-written.wav")),
        fallback: None,
        brain: None,
        start_agent: None,
        model_ended: false,
        outcome: None,
        mcp_calls: Default::default(),
        machine: None,
    };
    let call = tokio::spawn(task.run(Vec::new(), None));
    Rig {
        leg: leg_tx,
        model: model_tx,
        to_model: command_rx,
        commands: commands_tx,
        events,
        hooks,
        call,
    }
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

impl Rig {
    async fn ended(&mut self) {
        tokio::time::timeout(Duration::from_secs(5), &mut self.call)
            .await
            .expect("the call ends")
            .expect("the call task does not panic");
    }

    async fn model(&self, event: ModelEvent) {
        self.model.send(event).await.unwrap();
    }

    async fn next_command(&mut self) -> Command {
        tokio::time::timeout(Duration::from_secs(5), self.to_model.recv())
            .await
            .expect("a command to the model")
            .expect("the model channel open")
    }

    fn recorded(&self, check: impl Fn(&EventKind) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(check)
    }

    async fn greeting_and_tool_call(&mut self, audio: bool) {
        if audio {
            self.model(ModelEvent::Audio {
                item_id: "greeting".into(),
                data: vec![0; 320],
                format: AudioFormat::Pcm16 { rate: 8000 },
            })
            .await;
        }
        self.model(ModelEvent::ResponseDone {
            status: ResponseStatus::Completed,
        })
        .await;
        self.model(ModelEvent::ToolCall {
            call_id: "t1".into(),
            name: "hours".into(),
            arguments: "{}".into(),
        })
        .await;
        let Command::ToolResult { call_id, output } = self.next_command().await else {
            panic!("the tool's result goes to the model");
        };
        assert_eq!(
            (call_id.as_str(), output.as_str()),
            ("t1", r#"{"open":"9-17"}"#)
        );
    }

    /// Digit 0 makes the scripted agent transfer; the leg reports success.
    async fn transfer(&mut self) {
        self.leg
            .send(LegEvent::Digit {
                digit: '0',
                source: DigitSource::Leg,
            })
            .unwrap();
        until("the transfer request", || {
            self.recorded(
                |e| matches!(e, EventKind::Transfer { status, .. } if status == "requested"),
            )
        })
        .await;
        self.leg
            .send(LegEvent::TransferOutcome {
                code: 200,
                reason: "OK".into(),
                success: true,
            })
            .unwrap();
        self.ended().await;
        let hooks = self.hooks.lock().unwrap().clone();
        assert!(hooks.contains(&Hook::TransferResult {
            target: "sip:desk@example.org".into(),
            result: Ok(()),
        }));
        assert!(self.recorded(|e| matches!(e,
            EventKind::Ended { reason, abnormal: false, outcome: Some(outcome) }
                if reason == "transferred to sip:desk@example.org" && outcome == "sent to the desk")));
    }
}

fn facts(transport: &str) -> LegFacts {
    LegFacts {
        transport: transport.into(),
        codec: None,
        remote: "test".into(),
    }
}

#[tokio::test]
async fn an_audio_leg_runs_greeting_tool_call_barge_in_and_transfer() {
    let log: Log = Arc::default();
    let queue: Arc<Mutex<Queue>> = Arc::default();
    let (leg_log, leg_queue) = (log.clone(), queue.clone());
    let mut rig = start(
        move |events| AudioLeg {
            facts: facts("memory"),
            events,
            log: leg_log,
            queue: leg_queue,
        },
        true,
    );
    rig.greeting_and_tool_call(true).await;
    assert_eq!(
        log.lock().unwrap()[..3],
        [Done::Routed, Done::Recorded, Done::Played(160)]
    );

    // An answer is playing when the caller talks over it.
    rig.model(ModelEvent::Audio {
        item_id: "answer".into(),
        data: vec![0; 640],
        format: AudioFormat::Pcm16 { rate: 8000 },
    })
    .await;
    until("the answer played", || {
        log.lock().unwrap().contains(&Done::Played(320))
    })
    .await;
    *queue.lock().unwrap() = Queue {
        queued_ms: 900,
        played_ms: 250,
    };
    rig.model(ModelEvent::SpeechStarted {
        audio_start_ms: None,
    })
    .await;
    let Command::Truncate {
        item_id,
        audio_end_ms,
    } = rig.next_command().await
    else {
        panic!("barge-in truncates the answer");
    };
    assert_eq!((item_id.as_str(), audio_end_ms), ("answer", 250));
    assert!(rig.recorded(|e| matches!(
        e,
        EventKind::BargeIn {
            played_ms: 250,
            discarded_ms: 900
        }
    )));

    // Digits out work on this leg.
    rig.leg
        .send(LegEvent::Digit {
            digit: '9',
            source: DigitSource::Leg,
        })
        .unwrap();
    until("digits sent", || {
        log.lock().unwrap().contains(&Done::Digits("1".into()))
    })
    .await;

    rig.transfer().await;
    let log = log.lock().unwrap();
    assert!(log.contains(&Done::Transfer("sip:desk@example.org".into())));
    assert_eq!(log[log.len() - 2..], [Done::Hangup, Done::Closed]);
    assert!(rig.recorded(|e| matches!(e, EventKind::MediaStats { .. })));
}

/// An events-only leg with `capabilities`; transfers and hang-ups land in the returned log.
fn events_leg(
    capabilities: Capabilities,
) -> (
    Log,
    impl FnOnce(mpsc::UnboundedReceiver<LegEvent>) -> EventsLeg,
) {
    let log: Log = Arc::default();
    let (on_transfer, on_hangup) = (log.clone(), log.clone());
    let make = move |events| EventsLeg {
        facts: facts("provider"),
        capabilities,
        events,
        on_transfer: Box::new(move |target: &str| {
            push(&on_transfer, Done::Transfer(target.into()));
            Ok(())
        }),
        on_hangup: Box::new(move |_: &str| push(&on_hangup, Done::Hangup)),
        playout: NoPlayout,
    };
    (log, make)
}

#[tokio::test]
async fn an_events_only_leg_runs_the_same_call_without_frames() {
    let (log, make) = events_leg(Capabilities::of(&[Capability::Transfer]));
    // Recording is asked for, but there is no audio to record.
    let mut rig = start(make, true);
    rig.greeting_and_tool_call(false).await;
    // The provider played and truncates its own audio: barge-in is recorded, nothing is cut here.
    rig.model(ModelEvent::SpeechStarted {
        audio_start_ms: None,
    })
    .await;
    until("speech started", || {
        rig.recorded(|e| matches!(e, EventKind::SpeechStarted))
    })
    .await;
    rig.transfer().await;
    while let Ok(command) = rig.to_model.try_recv() {
        assert!(
            !matches!(command, Command::Truncate { .. }),
            "no truncation is sent"
        );
    }
    assert_eq!(
        *log.lock().unwrap(),
        [Done::Transfer("sip:desk@example.org".into()), Done::Hangup]
    );
    assert!(!rig.recorded(|e| matches!(
        e,
        EventKind::Recording { .. } | EventKind::MediaStats { .. } | EventKind::BargeIn { .. }
    )));
}

#[tokio::test]
async fn a_leg_without_digits_out_refuses_the_agents_digits() {
    let (log, make) = events_leg(Capabilities::of(&[Capability::Transfer]));
    let mut rig = start(make, false);
    rig.leg
        .send(LegEvent::Digit {
            digit: '9',
            source: DigitSource::Leg,
        })
        .unwrap();
    until("the refusal", || {
        rig.recorded(|e| {
            matches!(e, EventKind::ActionRefused { action: Action::SendDtmf(_), reason }
            if reason == "not-allowed: this call cannot send keypad digits")
        })
    })
    .await;
    assert!(log.lock().unwrap().is_empty());
    rig.commands.send(CallCommand::Hangup).await.unwrap();
    rig.ended().await;
    assert_eq!(*log.lock().unwrap(), [Done::Hangup]);
}

#[tokio::test]
async fn a_leg_without_transfer_tells_the_agent_not_allowed() {
    let (log, make) = events_leg(Capabilities::default());
    let mut rig = start(make, false);
    // The greeting is done: the transfer need not wait for it.
    rig.model(ModelEvent::ResponseDone {
        status: ResponseStatus::Completed,
    })
    .await;
    rig.leg
        .send(LegEvent::Digit {
            digit: '0',
            source: DigitSource::Leg,
        })
        .unwrap();
    until("the agent hears the refusal", || {
        rig.hooks.lock().unwrap().contains(&Hook::TransferResult {
            target: "sip:desk@example.org".into(),
            result: Err("not-allowed: this call cannot be transferred".into()),
        })
    })
    .await;
    assert!(log.lock().unwrap().is_empty(), "the leg was never asked");
    rig.leg.send(LegEvent::Hangup).unwrap();
    rig.ended().await;
    assert!(
        rig.recorded(|e| matches!(e, EventKind::Ended { reason, .. } if reason == "caller-hangup"))
    );
}

#[tokio::test]
async fn a_leg_without_audio_gets_no_recording_and_no_frames() {
    let (_log, make) = events_leg(Capabilities::default());
    let mut rig = start(make, true);
    // Model audio on a leg without audio goes nowhere and breaks nothing.
    rig.model(ModelEvent::Audio {
        item_id: "stray".into(),
        data: vec![0; 320],
        format: AudioFormat::Pcm16 { rate: 8000 },
    })
    .await;
    rig.leg.send(LegEvent::Hangup).unwrap();
    rig.ended().await;
    assert!(!rig.recorded(|e| matches!(e, EventKind::Recording { .. })));
    assert!(rig.recorded(|e| matches!(e, EventKind::Ended { .. })));
}
