//! The call's clock: caller silence, the maximum call length and fillers while tools run.

use super::*;
use crate::domain::conversation::TurnLimits;

/// A started call (greeting done, nothing playing) with `conversation` as its settings.
fn rig(conversation: ConversationConfig) -> Rig {
    let mut rig = Rig::new();
    rig.logic = CallLogic::new(LogicConfig {
        conversation,
        ..Rig::config(all_capabilities(), None, Duration::ZERO)
    });
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    rig.input(Input::ResponseDone);
    rig
}

fn silence(reprompt_after_secs: u64, reprompts: u32, hangup_after_secs: u64) -> ConversationConfig {
    ConversationConfig {
        reprompt_after_secs,
        reprompts,
        hangup_after_secs,
        ..ConversationConfig::off()
    }
}

fn secs(s: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(s))
}

fn tool_call(rig: &mut Rig, call_id: &str) -> Vec<Effect> {
    rig.input(Input::ToolCall {
        call_id: call_id.into(),
        name: "slow".into(),
        arguments: "{}".into(),
    })
}

fn tool_answer(rig: &mut Rig) -> Vec<Effect> {
    rig.input(Input::Hook(HookResult::Tool(Ok(ToolOutcome {
        result: Ok("done".into()),
        actions: Vec::new(),
    }))))
}

fn filler(text: &str, tool_ms: u64) -> Vec<Effect> {
    vec![
        Effect::Record(EventKind::Filler {
            text: text.into(),
            tool_ms,
        }),
        say(text),
    ]
}

#[test]
fn a_silent_caller_is_reprompted_then_hears_the_whole_goodbye_before_the_hang_up() {
    let mut rig = rig(silence(10, 1, 30));
    assert_eq!(rig.logic.deadline(), secs(10.0));
    // Nothing before its time.
    assert_eq!(rig.at_ms(9_999).input(Input::Tick), vec![]);
    // The agent hears of the silence first; it says nothing, so the host reprompts.
    let effects = rig.at_ms(10_000).input(Input::Tick);
    assert_eq!(
        effects,
        vec![Effect::Hook(Hook::Event(Notification::Silence {
            ms: 10_000
        }))]
    );
    assert_eq!(
        rig.logic.deadline(),
        None,
        "nothing is due while the agent is asked"
    );
    assert_eq!(
        rig.actions(Vec::new()),
        vec![
            Effect::Record(EventKind::SilenceReprompt {
                silent_ms: 10_000,
                count: 1,
                by: "host".into(),
            }),
            say("Are you still there?"),
        ]
    );
    // The reprompt plays from 10.5 s to 12 s: the agent's speech is not the caller's silence.
    rig.playout.queued_ms = 1_500;
    assert!(rig.at_ms(10_500).audio("r1"));
    assert_eq!(rig.input(Input::ResponseDone), vec![]);
    rig.playout.queued_ms = 0;
    assert_eq!(rig.at_ms(12_000).input(Input::Tick), vec![]);
    // One reprompt only; 10.5 s of silence counted so far, the goodbye at 30 s of it.
    assert_eq!(rig.logic.deadline(), secs(31.5));
    let effects = rig.at_ms(31_500).input(Input::Tick);
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::SilenceHangup {
                silent_ms: 30_000,
                reason: "no caller speech for 30 s".into(),
            }),
            say("I can't hear anything, so I will end the call now. Goodbye."),
        ]
    );
    // The goodbye is heard whole: a sound from the caller does not cut it, and the hang-up
    // waits until it has been played.
    assert!(rig.at_ms(32_000).audio("bye"));
    rig.playout.queued_ms = 3_000;
    let effects = rig.input(Input::SpeechStarted);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Model(Command::Truncate { .. }))),
        "{effects:?}"
    );
    assert_eq!(rig.playout.queued_ms, 3_000);
    rig.actions(Vec::new());
    rig.input(Input::SpeechStopped);
    rig.actions(Vec::new());
    rig.input(Input::ResponseDone);
    assert_eq!(rig.at_ms(34_000).input(Input::Tick), vec![]);
    rig.playout.queued_ms = 0;
    let effects = rig.at_ms(35_000).input(Input::Tick);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(
        effects.last(),
        Some(&Effect::End(Ending::limit(Limit::Silence)))
    );
    assert_eq!(Ending::limit(Limit::Silence).describe(), "silence-timeout");
}

#[test]
fn the_agent_may_reprompt_in_its_own_words() {
    let mut rig = rig(silence(5, 2, 0));
    rig.at_ms(5_000).input(Input::Tick);
    let own = vec![Action::Say("Hello? Take your time.".into())];
    let effects = rig.actions(own.clone());
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::SilenceReprompt {
                silent_ms: 5_000,
                count: 1,
                by: "agent".into(),
            }),
            actions_record(&own),
            say("Hello? Take your time."),
        ]
    );
}

#[test]
fn caller_speech_starts_the_silence_over() {
    let mut rig = rig(silence(10, 2, 30));
    rig.at_ms(8_000).input(Input::SpeechStarted);
    rig.actions(Vec::new());
    assert_eq!(rig.logic.deadline(), None, "the caller speaks");
    rig.at_ms(9_000).input(Input::SpeechStopped);
    rig.actions(Vec::new());
    assert_eq!(rig.logic.deadline(), secs(19.0));
    // A key press is the caller too.
    rig.at_ms(15_000).input(dtmf('5'));
    rig.actions(Vec::new());
    assert_eq!(rig.logic.deadline(), secs(25.0));
}

#[test]
fn silence_is_not_counted_while_a_tool_runs_or_the_call_is_on_hold() {
    let mut rig = rig(silence(10, 2, 0));
    rig.at_ms(2_000);
    tool_call(&mut rig, "t1");
    assert_eq!(rig.logic.deadline(), None);
    rig.at_ms(20_000);
    tool_answer(&mut rig);
    // A reprompt follows a quiet stretch of its own length.
    assert_eq!(rig.logic.deadline(), secs(30.0));
    rig.at_ms(21_000).input(Input::Hold(true));
    assert_eq!(rig.logic.deadline(), None);
    rig.at_ms(50_000).input(Input::Hold(false));
    assert_eq!(rig.logic.deadline(), secs(60.0));
}

#[test]
fn the_call_is_warned_then_ends_at_its_maximum_length_cutting_the_agent_off() {
    let mut rig = rig(ConversationConfig {
        max_call_secs: 60,
        warn_before_secs: 10,
        ..ConversationConfig::off()
    });
    assert_eq!(rig.logic.deadline(), secs(50.0));
    let effects = rig.at_ms(50_000).input(Input::Tick);
    assert_eq!(
        effects,
        vec![Effect::Hook(Hook::Event(Notification::EndingSoon {
            ms: 10_000
        }))]
    );
    let effects = rig.actions(Vec::new());
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::MaxDurationWarning {
                remaining_ms: 10_000,
                by: "host".into(),
            }),
            say("We are almost out of time for this call."),
        ]
    );
    rig.input(Input::ResponseDone);
    assert_eq!(rig.logic.deadline(), secs(60.0));
    // The agent is answering when the time is up: it is cut off for the goodbye.
    assert!(rig.at_ms(59_200).audio("answer"));
    rig.playout.queued_ms = 3_000;
    rig.playout.played_ms = 800;
    let effects = rig.at_ms(60_000).input(Input::Tick);
    assert_eq!(
        effects,
        vec![
            Effect::Record(EventKind::MaxDuration { limit_ms: 60_000 }),
            Effect::Model(Command::Truncate {
                item_id: "answer".into(),
                audio_end_ms: 800,
            }),
            say("We have reached the time limit for this call. Goodbye."),
        ]
    );
    assert!(
        !rig.audio("answer"),
        "the rest of the cut answer is not played"
    );
    assert!(rig.at_ms(60_400).audio("goodbye"));
    rig.playout.queued_ms = 2_000;
    rig.input(Input::ResponseDone);
    rig.playout.queued_ms = 0;
    let effects = rig.at_ms(62_400).input(Input::Tick);
    assert_eq!(effects[0], Effect::Hangup);
    let ending = Ending::limit(Limit::MaxDuration);
    assert_eq!(effects.last(), Some(&Effect::End(ending.clone())));
    assert_eq!(ending.describe(), "max-duration");
    assert_eq!(ending.reason, EndReason::Timeout, "the agent hears timeout");
}

#[test]
fn a_slow_tool_gets_fillers_in_turn_until_the_caller_speaks() {
    let mut rig = rig(ConversationConfig {
        filler_after_ms: 1_500,
        filler_every_ms: 3_000,
        fillers: vec!["One moment.".into(), "Still checking.".into()],
        ..ConversationConfig::off()
    });
    rig.at_ms(1_000);
    tool_call(&mut rig, "t1");
    assert_eq!(rig.logic.deadline(), secs(2.5));
    assert_eq!(rig.at_ms(2_499).input(Input::Tick), vec![]);
    assert_eq!(
        rig.at_ms(2_500).input(Input::Tick),
        filler("One moment.", 1_500)
    );
    assert_eq!(rig.logic.deadline(), secs(5.5));
    assert_eq!(
        rig.at_ms(5_500).input(Input::Tick),
        filler("Still checking.", 4_500)
    );
    // The caller speaks over the second filler: it is cut, and no more follow.
    assert!(rig.at_ms(5_900).audio("f2"));
    rig.playout.queued_ms = 900;
    rig.playout.played_ms = 300;
    let effects = rig.at_ms(6_200).input(Input::SpeechStarted);
    assert!(
        effects.contains(&Effect::Model(Command::Truncate {
            item_id: "f2".into(),
            audio_end_ms: 300,
        })),
        "{effects:?}"
    );
    assert_eq!(rig.logic.deadline(), None);
    // The tool's result still reaches the model.
    let effects = tool_answer(&mut rig);
    assert!(
        effects.contains(&Effect::Model(Command::ToolResult {
            call_id: "t1".into(),
            output: "done".into(),
        })),
        "{effects:?}"
    );
}

#[test]
fn a_fast_tool_gets_no_filler_and_the_next_slow_one_goes_on_in_turn() {
    let mut rig = rig(ConversationConfig {
        filler_after_ms: 1_500,
        filler_every_ms: 0,
        fillers: vec!["One moment.".into(), "Let me see.".into()],
        ..ConversationConfig::off()
    });
    rig.at_ms(1_000);
    tool_call(&mut rig, "t1");
    rig.at_ms(1_200);
    let effects = tool_answer(&mut rig);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Record(EventKind::Filler { .. }))),
        "{effects:?}"
    );
    assert_eq!(rig.logic.deadline(), None);
    rig.at_ms(10_000);
    tool_call(&mut rig, "t2");
    assert_eq!(
        rig.at_ms(11_500).input(Input::Tick),
        filler("One moment.", 1_500)
    );
    // One filler only (`filler-every-ms` 0).
    assert_eq!(rig.logic.deadline(), None);
    tool_answer(&mut rig);
    rig.at_ms(20_000);
    tool_call(&mut rig, "t3");
    assert_eq!(
        rig.at_ms(21_500).input(Input::Tick),
        filler("Let me see.", 1_500)
    );
}

#[test]
fn the_agent_sets_its_own_limits_and_fillers_for_the_call() {
    let mut rig = rig(ConversationConfig::off());
    assert_eq!(rig.logic.deadline(), None);
    rig.logic.set_turn_limits(TurnLimits {
        fillers: Some(vec!["Hang on.".into()]),
        reprompt_after_ms: Some(4_000),
        hangup_after_ms: None,
        max_call_ms: Some(120_000),
    });
    assert_eq!(rig.logic.deadline(), secs(4.0));
    // Fillers stay off without a threshold: the agent gave the words, not the timing.
    tool_call(&mut rig, "t1");
    assert_eq!(rig.logic.deadline(), None);
}

#[test]
fn the_agent_a_call_is_handed_to_brings_its_own_settings() {
    let mut rig = rig(ConversationConfig::off());
    rig.input(dtmf('2'));
    let effects = rig.actions(vec![Action::Transfer("agent:appointments".into())]);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::StartAgent(_))),
        "{effects:?}"
    );
    let started = HandedOff {
        version: "0.2.0".into(),
        actions: Vec::new(),
        greeting: None,
        new_session: false,
        end_call: false,
        mcp_tools: Default::default(),
        conversation: ConversationConfig {
            max_call_secs: 300,
            warn_before_secs: 0,
            ..ConversationConfig::off()
        },
    };
    rig.at_ms(2_000).input(Input::HandedOff(Ok(started)));
    // The maximum length counts from the call's answer, not the hand-off.
    assert_eq!(rig.logic.deadline(), secs(300.0));
}
