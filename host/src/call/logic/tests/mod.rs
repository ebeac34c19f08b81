//! The call logic driven with a fake clock and a fake playout: one test per transition and per
//! failure path.

mod agent;
mod conversation;
mod handoff;
mod machine;
mod mcp;

use super::*;
use crate::call::leg::{Capabilities, Interrupted};
use crate::domain::agent_event::{CallProgress, Notification};
use crate::domain::conversation::ConversationConfig;
use crate::domain::{DigitRequest, FaultKind, Role};
use crate::model::Usage;
use crate::plugins::ToolOutcome;

/// A playout whose queue the test sets.
#[derive(Default)]
struct FakePlayout {
    queued_ms: u64,
    marks: u32,
    /// What an interruption reports.
    played_ms: u64,
}

impl Playout for FakePlayout {
    fn queued_ms(&self) -> u64 {
        self.queued_ms
    }
    fn is_empty(&self) -> bool {
        self.queued_ms == 0
    }
    fn mark(&mut self) {
        self.marks += 1;
    }
    fn interrupt(&mut self) -> Interrupted {
        let discarded_ms = std::mem::take(&mut self.queued_ms);
        Interrupted {
            played_ms: self.played_ms,
            discarded_ms,
        }
    }
}

const DRAIN: Duration = Duration::from_secs(30);

fn all_capabilities() -> Capabilities {
    Capabilities::of(&[
        Capability::Audio,
        Capability::SendDigits,
        Capability::Transfer,
        Capability::Hold,
        Capability::Handoff,
    ])
}

struct Rig {
    logic: CallLogic,
    playout: FakePlayout,
    now: Duration,
}

impl Rig {
    fn with(capabilities: Capabilities, fallback_transfer: Option<&str>) -> Rig {
        Rig::configured(capabilities, fallback_transfer, Duration::ZERO)
    }

    fn configured(
        capabilities: Capabilities,
        fallback_transfer: Option<&str>,
        final_tail: Duration,
    ) -> Rig {
        Rig {
            logic: CallLogic::new(Rig::config(capabilities, fallback_transfer, final_tail)),
            playout: FakePlayout::default(),
            now: Duration::ZERO,
        }
    }

    /// The rig's call: an agent with a greeting, the host's end-call tool, the apology then a
    /// hang-up (or `fallback_transfer`) when something fails.
    fn config(
        capabilities: Capabilities,
        fallback_transfer: Option<&str>,
        final_tail: Duration,
    ) -> LogicConfig {
        let apology = Action::Say("Sorry.".into());
        let last = match fallback_transfer {
            Some(t) => Action::Transfer(t.into()),
            None => Action::Hangup,
        };
        LogicConfig {
            drain_limit: DRAIN,
            final_tail,
            fallback_transfer: fallback_transfer.map(String::from),
            fallback_actions: vec![apology, last],
            capabilities,
            outbound: false,
            // Only a tool of that name is the host's; the others go to the agent as ever.
            end_call: true,
            agent: "first".into(),
            mcp_tools: Default::default(),
            greeting: true,
            conversation: ConversationConfig::off(),
        }
    }

    fn new() -> Rig {
        Rig::with(all_capabilities(), None)
    }

    /// A call that started with `actions` and whose greeting is done.
    fn started(actions: Vec<Action>) -> Rig {
        let mut rig = Rig::new();
        rig.input(Input::Start {
            actions,
            failure: None,
        });
        rig.input(Input::ResponseDone);
        rig
    }

    fn at_ms(&mut self, ms: u64) -> &mut Rig {
        self.now = Duration::from_millis(ms);
        self
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        self.logic.handle(self.now, input, &mut self.playout);
        std::iter::from_fn(|| self.logic.poll()).collect()
    }

    fn audio(&mut self, item: &str) -> bool {
        self.logic
            .agent_audio(self.now, item, Duration::ZERO, &mut self.playout)
    }

    fn actions(&mut self, actions: Vec<Action>) -> Vec<Effect> {
        self.input(Input::Hook(HookResult::Actions(Ok(actions))))
    }
}

fn say(text: &str) -> Effect {
    Effect::Model(Command::Say(text.into()))
}

fn state(state: CallState) -> Effect {
    Effect::Record(EventKind::State { state })
}

fn actions_record(actions: &[Action]) -> Effect {
    Effect::Record(EventKind::Actions {
        hook: "agent".into(),
        actions: actions.to_vec(),
    })
}

fn ending(reason: EndReason, abnormal: bool) -> Effect {
    Effect::End(Ending::new(reason, abnormal))
}

fn fault() -> AgentFault {
    AgentFault {
        kind: FaultKind::Trap,
        hook: "on-dtmf",
        message: "unreachable".into(),
    }
}

fn dtmf(digit: char) -> Input {
    Input::Digit {
        digit,
        source: DigitSource::Rfc4733,
    }
}

fn dtmf_record(digit: char) -> Effect {
    Effect::Record(EventKind::Dtmf {
        digits: digit.to_string(),
        source: "rfc4733".into(),
    })
}

#[test]
fn start_goes_active_starts_recording_and_runs_the_actions() {
    let mut rig = Rig::new();
    let hello = vec![Action::Say("Hello.".into())];
    let effects = rig.input(Input::Start {
        actions: hello.clone(),
        failure: None,
    });
    assert_eq!(
        effects,
        vec![
            state(CallState::Active),
            Effect::StartRecording,
            actions_record(&hello),
            say("Hello."),
        ]
    );
    assert_eq!(rig.logic.deadline(), None);
}

#[test]
fn a_failed_start_plays_the_apology_then_hangs_up_once_it_is_heard() {
    let mut rig = Rig::new();
    let effects = rig.input(Input::Start {
        actions: Vec::new(),
        failure: Some("agent failed".into()),
    });
    assert_eq!(
        effects,
        vec![state(CallState::Active), Effect::StartRecording]
    );
    assert_eq!(rig.logic.deadline(), Some(DRAIN));
    // The apology is still being spoken.
    rig.playout.queued_ms = 400;
    assert_eq!(rig.at_ms(100).input(Input::ResponseDone), vec![]);
    rig.playout.queued_ms = 0;
    assert_eq!(
        rig.at_ms(600).input(Input::Tick),
        vec![
            Effect::Hangup,
            state(CallState::Ending),
            ending(EndReason::Failed("agent failed".into()), true),
        ]
    );
    assert!(rig.logic.ended());
}

#[test]
fn a_failed_start_with_a_fallback_transfer_hangs_up_when_the_transfer_cannot_start() {
    let mut rig = Rig::with(all_capabilities(), Some("sip:desk@example.org"));
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: Some("model unavailable".into()),
    });
    let effects = rig.input(Input::ResponseDone);
    assert_eq!(
        effects,
        vec![
            state(CallState::Transferring),
            Effect::Record(EventKind::Transfer {
                target: "sip:desk@example.org".into(),
                status: "requested".into(),
                detail: String::new(),
            }),
            Effect::Transfer("sip:desk@example.org".into()),
        ]
    );
    let effects = rig.input(Input::TransferStarted(Err("503".into())));
    assert_eq!(effects[1], state(CallState::Active));
    assert_eq!(effects[2], Effect::Hangup);
    assert_eq!(
        effects[4],
        ending(EndReason::Failed("model unavailable".into()), true)
    );
}

#[test]
fn a_hang_up_waits_for_the_model_and_the_playout() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    let effects = rig.actions(vec![Action::Say("Bye.".into()), Action::Hangup]);
    assert_eq!(effects.last(), Some(&say("Bye.")));
    rig.playout.queued_ms = 500;
    // The model finished, the caller has not heard it all yet.
    assert_eq!(rig.input(Input::ResponseDone), vec![]);
    rig.playout.queued_ms = 0;
    let effects = rig.at_ms(700).input(Input::Tick);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(effects[2], ending(EndReason::AgentHangup, false));
}

/// An agent without a greeting waits for the callee (an outbound call, a voicemail): its first
/// say and hang-up end the call once the say is heard, not after the drain limit.
#[test]
fn without_a_greeting_a_say_then_hang_up_ends_when_the_say_is_done() {
    let mut rig = Rig::new();
    rig.logic = CallLogic::new(LogicConfig {
        greeting: false,
        ..Rig::config(all_capabilities(), None, Duration::ZERO)
    });
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    rig.input(dtmf('1'));
    rig.actions(vec![
        Action::Say("Please call us back.".into()),
        Action::Hangup,
    ]);
    rig.playout.queued_ms = 0;
    let effects = rig.at_ms(2_000).input(Input::ResponseDone);
    assert_eq!(effects.first(), Some(&Effect::Hangup), "{effects:?}");
}

#[test]
fn a_hang_up_waits_for_a_provider_playing_the_audio_itself() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.actions(vec![Action::Say("Bye.".into()), Action::Hangup]);
    rig.input(Input::ProviderAudioStarted);
    // OpenAI's SIP connector: `response.done` while the caller still hears the words.
    assert_eq!(rig.input(Input::ResponseDone), vec![]);
    let effects = rig.at_ms(1_500).input(Input::ProviderAudioStopped);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(effects[2], ending(EndReason::AgentHangup, false));

    // Audio that never reports its end holds the hang-up only up to the drain limit.
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.actions(vec![Action::Say("Bye.".into()), Action::Hangup]);
    rig.input(Input::ProviderAudioStarted);
    assert_eq!(rig.input(Input::ResponseDone), vec![]);
    assert_eq!(rig.at_ms(29_999).input(Input::Tick), vec![]);
    assert_eq!(rig.at_ms(30_000).input(Input::Tick)[0], Effect::Hangup);
}

#[test]
fn a_hang_up_goes_ahead_at_the_drain_limit() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('9'));
    rig.actions(vec![Action::Say("Long goodbye".into()), Action::Hangup]);
    rig.playout.queued_ms = 5_000;
    assert_eq!(rig.logic.deadline(), Some(DRAIN));
    assert_eq!(rig.at_ms(29_999).input(Input::Tick), vec![]);
    let effects = rig.at_ms(30_000).input(Input::Tick);
    assert_eq!(effects[0], Effect::Hangup);
}

#[test]
fn actions_after_a_hang_up_are_ignored() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    let effects = rig.actions(vec![Action::Hangup, Action::Say("never".into())]);
    assert!(!effects.contains(&say("never")));
    assert_eq!(effects[1], Effect::Hangup);
}

#[test]
fn the_far_end_hanging_up_ends_the_call() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::FarEndHangup);
    assert_eq!(
        effects,
        vec![
            state(CallState::Ending),
            ending(EndReason::CallerHangup, false)
        ]
    );
    // Nothing after the end.
    assert_eq!(rig.input(dtmf('1')), vec![]);
}

#[test]
fn a_digit_interrupts_the_prompt_and_goes_to_the_agent() {
    let mut rig = Rig::started(Vec::new());
    // 200 ms of earlier audio queued ahead of the prompt's item.
    rig.playout.queued_ms = 200;
    assert!(rig.audio("item-1"));
    assert_eq!(rig.playout.marks, 1);
    rig.playout.queued_ms = 1_000;
    rig.playout.played_ms = 900;
    let effects = rig.input(dtmf('5'));
    assert_eq!(
        effects,
        vec![
            dtmf_record('5'),
            Effect::Record(EventKind::BargeIn {
                played_ms: 700,
                discarded_ms: 1_000,
            }),
            Effect::Model(Command::Truncate {
                item_id: "item-1".into(),
                audio_end_ms: 700,
            }),
            Effect::Hook(Hook::Dtmf("5".into())),
        ]
    );
    // Late audio of the cut item is not played.
    assert!(!rig.audio("item-1"));
    let effects = rig.actions(vec![Action::Say("Five.".into())]);
    assert_eq!(effects[1], say("Five."));
    // Then the agent hears how much of the prompt was heard.
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Event(Notification::BargeIn {
            heard_ms: 700
        })))
    );
}

#[test]
fn caller_speech_barges_in_and_nothing_is_cut_when_all_was_heard() {
    let mut rig = Rig::started(Vec::new());
    assert!(rig.audio("a"));
    // All of item a was heard: no truncation.
    let speech_started = Effect::Hook(Hook::Event(Notification::SpeechStarted));
    assert_eq!(
        rig.input(Input::SpeechStarted),
        vec![
            Effect::Record(EventKind::SpeechStarted),
            speech_started.clone()
        ]
    );
    assert_eq!(rig.actions(Vec::new()), vec![]);
    assert!(!rig.audio("a"));
    assert!(rig.audio("b"));
    rig.playout.queued_ms = 300;
    rig.playout.played_ms = 40;
    let effects = rig.input(Input::SpeechStarted);
    assert_eq!(effects.len(), 4);
    assert_eq!(
        effects[2],
        Effect::Model(Command::Truncate {
            item_id: "b".into(),
            audio_end_ms: 40,
        })
    );
    assert_eq!(effects[3], speech_started);
    assert_eq!(
        rig.actions(Vec::new()),
        vec![Effect::Hook(Hook::Event(Notification::BargeIn {
            heard_ms: 40
        }))]
    );
}

#[test]
fn the_agent_hears_of_speech_and_its_answer_is_carried_out() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::SpeechStopped);
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Event(Notification::SpeechStopped)))
    );
    let effects = rig.actions(vec![Action::Say("Mm-hm.".into())]);
    assert_eq!(effects.last(), Some(&say("Mm-hm.")));
}

#[test]
fn an_outbound_call_tells_the_agent_it_was_answered() {
    let mut rig = Rig::new();
    rig.logic.config.outbound = true;
    let effects = rig.input(Input::Start {
        actions: vec![Action::Say("Hi, this is the clinic.".into())],
        failure: None,
    });
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Event(Notification::Progress(
            CallProgress::Answered
        ))))
    );
}

#[test]
fn a_failed_agent_hears_no_more_notifications() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.input(Input::Hook(HookResult::Actions(Err(fault()))));
    let effects = rig.input(Input::SpeechStopped);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Hook(_))),
        "{effects:?}"
    );
}

#[test]
fn collected_digits_stop_at_the_maximum_the_terminator_or_the_timeout() {
    let request = |max: u8| {
        Action::CollectDigits(DigitRequest {
            max_digits: max,
            timeout_ms: 3_000,
            terminator: Some("#".into()),
            prompt: Some("Your PIN?".into()),
        })
    };
    let mut rig = Rig::started(vec![request(3)]);
    assert_eq!(rig.logic.deadline(), Some(Duration::from_secs(3)));
    assert_eq!(rig.input(dtmf('1')), vec![dtmf_record('1')]);
    assert_eq!(rig.input(dtmf('2')), vec![dtmf_record('2')]);
    let effects = rig.input(dtmf('3'));
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Dtmf("123".into())))
    );

    rig.actions(vec![request(6)]);
    rig.input(dtmf('4'));
    let effects = rig.input(dtmf('#'));
    assert_eq!(effects.last(), Some(&Effect::Hook(Hook::Dtmf("4".into()))));

    rig.actions(vec![request(6)]);
    rig.at_ms(1_000).input(dtmf('7'));
    assert_eq!(rig.logic.deadline(), Some(Duration::from_millis(4_000)));
    assert_eq!(rig.at_ms(3_999).input(Input::Tick), vec![]);
    let effects = rig.at_ms(4_000).input(Input::Tick);
    assert_eq!(effects, vec![Effect::Hook(Hook::Dtmf("7".into()))]);
}

#[test]
fn digits_are_only_recorded_once_the_call_is_ending_or_the_agent_failed() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.playout.queued_ms = 100;
    rig.actions(vec![Action::Hangup]);
    assert_eq!(rig.input(dtmf('2')), vec![dtmf_record('2')]);

    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.playout.queued_ms = 100;
    rig.input(Input::Hook(HookResult::Actions(Err(fault()))));
    assert_eq!(rig.input(dtmf('3')), vec![dtmf_record('3')]);
}

#[test]
fn final_transcripts_are_recorded_and_go_to_the_agent() {
    let mut rig = Rig::started(Vec::new());
    let fragment = Input::Transcript {
        role: Role::Caller,
        text: "When are".into(),
        is_final: false,
    };
    assert_eq!(rig.input(fragment), vec![]);
    let blank = Input::Transcript {
        role: Role::Caller,
        text: "  ".into(),
        is_final: true,
    };
    assert_eq!(rig.input(blank), vec![]);
    let effects = rig.input(Input::Transcript {
        role: Role::Caller,
        text: "When are you open?".into(),
        is_final: true,
    });
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::Transcript {
                role: Role::Caller,
                text: "When are you open?".into(),
            }),
            Effect::Hook(Hook::Transcript(Role::Caller, "When are you open?".into())),
        ]
    );
}

#[test]
fn the_model_closing_mid_call_switches_to_the_apology() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::ModelClosed("Error(1011)".into()));
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::ModelError {
                message: "model session closed: Error(1011)".into(),
            }),
            Effect::ConnectFallback,
        ]
    );
    let effects = rig.input(Input::ResponseDone);
    assert_eq!(
        effects.last(),
        Some(&ending(
            EndReason::Failed("model session closed".into()),
            true
        ))
    );
}

#[test]
fn the_model_closing_while_the_call_ends_just_hangs_up() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.playout.queued_ms = 100;
    rig.actions(vec![Action::Hangup]);
    let effects = rig.input(Input::ModelClosed("Normal".into()));
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(effects[2], ending(EndReason::AgentHangup, false));
}

#[test]
fn the_model_or_the_leg_going_away_ends_the_call_abnormally() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::ModelGone);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(
        effects[2],
        ending(EndReason::Failed("model session ended".into()), true)
    );
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::LegLost("media ended".into()));
    // The leg is gone: nothing to hang up.
    assert_eq!(
        effects,
        vec![
            state(CallState::Ending),
            ending(EndReason::Failed("media ended".into()), true)
        ]
    );
}

#[test]
fn no_media_hangs_up_with_a_timeout() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::MediaTimeout);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(effects[2], ending(EndReason::Timeout, false));
}

#[test]
fn api_commands_hang_up_transfer_and_cancel() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::Command(Some(CallCommand::Hangup)));
    let Some(Effect::End(end)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert!(end.requested);
    assert_eq!(end.describe(), "hangup-requested");

    // A transfer from the API starts at once; a refusal is only logged and recorded.
    let mut rig = Rig::started(Vec::new());
    rig.playout.queued_ms = 2_000;
    let effects = rig.input(Input::Command(Some(CallCommand::Transfer(
        "sip:x@y".into(),
    ))));
    assert_eq!(effects.last(), Some(&Effect::Transfer("sip:x@y".into())));
    let effects = rig.input(Input::TransferStarted(Err("refused".into())));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Hook(_))));

    let mut rig = Rig::started(Vec::new());
    assert_eq!(
        rig.input(Input::Command(Some(CallCommand::Cancelled)))
            .last(),
        Some(&ending(EndReason::CallerHangup, false))
    );
    let mut rig = Rig::started(Vec::new());
    assert_eq!(
        rig.input(Input::Command(None)).last(),
        Some(&ending(EndReason::CallerHangup, false))
    );
}

#[test]
fn a_turn_is_timed_from_end_of_speech_to_first_audio_out() {
    let mut rig = Rig::started(Vec::new());
    rig.at_ms(1_000).input(Input::SpeechStopped);
    // A cascade brain tells how its stages shared the model's time.
    let stages = StageLatency {
        stt_ms: 100.0,
        llm_ms: 300.0,
        tts_ms: 90.0,
    };
    assert_eq!(rig.at_ms(1_490).input(Input::StageLatency(stages)), vec![]);
    rig.at_ms(1_500);
    assert!(
        rig.logic
            .agent_audio(rig.now, "r1", Duration::from_millis(2), &mut rig.playout)
    );
    let effects = rig.at_ms(1_530).input(Input::PlayoutStarted {
        at: Duration::from_millis(1_520),
    });
    assert_eq!(
        effects,
        vec![Effect::Record(EventKind::TurnLatency {
            turn: 1,
            host_in_ms: 2.0,
            model_ms: 500.0,
            host_out_ms: 20.0,
            total_ms: 522.0,
            stages: Some(stages),
        })]
    );
    // An answer queued behind earlier audio is not timed.
    rig.at_ms(3_000).input(Input::SpeechStopped);
    rig.playout.queued_ms = 300;
    assert!(rig.audio("r2"));
    assert_eq!(
        rig.input(Input::PlayoutStarted {
            at: Duration::from_millis(3_100)
        }),
        vec![]
    );
}

#[test]
fn a_provider_playing_its_own_audio_times_the_turn_when_it_starts() {
    let mut rig = Rig::started(Vec::new());
    rig.at_ms(1_000).input(Input::SpeechStopped);
    let effects = rig.at_ms(1_400).input(Input::ProviderAudioStarted);
    assert_eq!(
        effects,
        vec![Effect::Record(EventKind::TurnLatency {
            turn: 1,
            host_in_ms: 0.0,
            model_ms: 400.0,
            host_out_ms: 0.0,
            total_ms: 400.0,
            stages: None,
        })]
    );
    // Audio with no caller turn before it (a greeting) is not a turn.
    assert_eq!(rig.at_ms(2_000).input(Input::ProviderAudioStarted), vec![]);
}

#[test]
fn usage_and_model_errors_are_recorded() {
    let mut rig = Rig::started(Vec::new());
    let usage = Usage {
        provider: "openai",
        input_tokens: 301,
        output_tokens: 42,
        input_audio_tokens: Some(280),
        ..Usage::default()
    };
    let effects = rig.input(Input::Usage(usage.items()));
    let [
        Effect::Record(EventKind::Usage {
            input_tokens: 301,
            output_tokens: 42,
            items,
        }),
    ] = &effects[..]
    else {
        panic!("{effects:?}");
    };
    // The split the provider reported is kept.
    assert!(
        items
            .iter()
            .any(|i| i.kind == "input-audio" && i.amount == 280.0 && i.provider == "openai")
    );
    assert_eq!(
        rig.input(Input::ModelError("rate limited".into())),
        vec![Effect::Record(EventKind::ModelError {
            message: "rate limited".into()
        })]
    );
}

#[test]
fn the_deadline_is_the_earliest_of_digits_and_drain() {
    let collect = Action::CollectDigits(DigitRequest {
        max_digits: 4,
        timeout_ms: 5_000,
        terminator: None,
        prompt: None,
    });
    let mut rig = Rig::started(vec![collect]);
    assert_eq!(rig.logic.deadline(), Some(Duration::from_secs(5)));
    rig.playout.queued_ms = 100;
    rig.input(Input::Command(Some(CallCommand::Transfer(
        "sip:a@b".into(),
    ))));
    rig.input(Input::TransferStarted(Ok(())));
    assert_eq!(rig.logic.deadline(), Some(Duration::from_secs(5)));
}

#[test]
fn hold_cuts_the_agent_both_ways_and_resume_restores_it() {
    let mut rig = Rig::new();
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    // The greeting is being spoken: 300 ms queued, 40 ms heard.
    assert!(rig.audio("a"));
    rig.playout.queued_ms = 300;
    rig.playout.played_ms = 40;
    assert_eq!(
        rig.at_ms(1_000).input(Input::Hold(true)),
        vec![
            Effect::Record(EventKind::Hold {
                held: true,
                held_ms: None
            }),
            Effect::CallerAudio(false),
            Effect::Model(Command::CancelResponse),
            Effect::Model(Command::Truncate {
                item_id: "a".into(),
                audio_end_ms: 40
            }),
        ]
    );
    assert_eq!(rig.playout.queued_ms, 0, "what was queued is dropped");
    // Nothing the model still sends is played while on hold, of any item.
    assert!(!rig.audio("a"));
    assert!(!rig.audio("b"));
    // A second hold offer (inactive after sendonly) changes nothing.
    assert_eq!(rig.at_ms(2_000).input(Input::Hold(true)), vec![]);
    assert!(!rig.logic.ended(), "a held call stays up");
    assert_eq!(
        rig.at_ms(5_000).input(Input::Hold(false)),
        vec![
            Effect::Record(EventKind::Hold {
                held: false,
                held_ms: Some(4_000)
            }),
            Effect::CallerAudio(true),
        ]
    );
    assert!(rig.audio("b"), "after the resume the agent is heard again");
    // A resume without a hold is nothing.
    assert_eq!(rig.input(Input::Hold(false)), vec![]);
}

#[test]
fn hold_while_the_agent_is_quiet_only_stops_the_caller_audio() {
    let mut rig = Rig::started(Vec::new());
    assert_eq!(
        rig.input(Input::Hold(true)),
        vec![
            Effect::Record(EventKind::Hold {
                held: true,
                held_ms: None
            }),
            Effect::CallerAudio(false),
        ]
    );
}

#[test]
fn session_timer_steps_are_recorded() {
    let mut rig = Rig::started(Vec::new());
    let note = crate::call::leg::SessionTimerNote {
        status: "refreshed",
        interval_secs: 90,
        refresher: "peer",
        code: None,
    };
    assert_eq!(
        rig.input(Input::SessionTimer(note)),
        vec![Effect::Record(EventKind::SessionTimer {
            status: "refreshed".into(),
            interval_secs: 90,
            refresher: "peer".into(),
            code: None,
        })]
    );
    assert!(!rig.logic.ended());
}

#[test]
fn a_model_that_closes_during_the_hold_is_replaced_on_resume_with_the_conversation() {
    let mut rig = Rig::started(Vec::new());
    for (role, text) in [
        (Role::Caller, "Where is my order?"),
        (Role::Agent, "Let me check."),
    ] {
        rig.input(Input::Transcript {
            role,
            text: text.into(),
            is_final: true,
        });
        rig.actions(Vec::new());
    }
    rig.at_ms(1_000).input(Input::Hold(true));
    // The provider ends the session at its maximum duration, while nobody talks to it.
    assert_eq!(
        rig.at_ms(60_000)
            .input(Input::ModelClosed("session_expired".into())),
        vec![Effect::Record(EventKind::ModelError {
            message: "model session closed during the hold: session_expired".into()
        })]
    );
    assert_eq!(rig.input(Input::ModelGone), vec![]);
    assert!(!rig.logic.ended(), "the call outlives its model session");
    assert_eq!(
        rig.at_ms(70_000).input(Input::Hold(false)),
        vec![
            Effect::Record(EventKind::Hold {
                held: false,
                held_ms: Some(69_000)
            }),
            Effect::Reconnect(vec![
                (Role::Caller, "Where is my order?".into()),
                (Role::Agent, "Let me check.".into()),
            ]),
            Effect::CallerAudio(true),
        ]
    );
    // A new session that cannot be had is a model failure like any other: the apology.
    let failed = rig.input(Input::ModelClosed("reconnecting failed: refused".into()));
    assert!(failed.contains(&Effect::ConnectFallback), "{failed:?}");
}
