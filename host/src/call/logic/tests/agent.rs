//! Tools, agent faults, transfers and what a leg cannot do.

use super::*;
use crate::domain::agent_event::Notification;

#[test]
fn a_tool_call_is_answered_by_the_agent_and_its_actions_run() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::ToolCall {
        call_id: "t1".into(),
        name: "hours".into(),
        arguments: "{}".into(),
    });
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::ToolCall {
            name: "hours".into(),
            arguments: "{}".into(),
        }))
    );
    let effects = rig.input(Input::Hook(HookResult::Tool(Ok(ToolOutcome {
        result: Err("closed today".into()),
        actions: vec![Action::Say("Sorry.".into())],
    }))));
    assert_eq!(
        effects[0],
        Effect::Record(EventKind::ToolResult {
            call_id: "t1".into(),
            ok: false,
            output: "closed today".into(),
        })
    );
    assert_eq!(
        effects[1],
        Effect::Model(Command::ToolResult {
            call_id: "t1".into(),
            output: r#"{"error":"closed today"}"#.into(),
        })
    );
    assert_eq!(effects.last(), Some(&say("Sorry.")));
}

#[test]
fn the_end_call_tool_hangs_up_once_the_goodbye_has_been_heard() {
    let mut rig = Rig::started(Vec::new());
    let effects = rig.input(Input::ToolCall {
        call_id: "t9".into(),
        name: END_CALL_TOOL.into(),
        arguments: r#"{"reason":"done"}"#.into(),
    });
    // The host answers it, not the agent, and the model goes on to say goodbye.
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Hook(_))),
        "{effects:?}"
    );
    assert!(
        effects.iter().any(|e| matches!(e,
            Effect::Model(Command::ToolResult { call_id, output })
                if call_id == "t9" && output.contains("goodbye"))),
        "{effects:?}"
    );
    assert!(!rig.logic.ended());
    // The response that called the tool is done; the goodbye has not even started.
    assert_eq!(rig.at_ms(50).input(Input::ResponseDone), vec![]);
    assert_eq!(rig.at_ms(100).input(Input::Tick), vec![]);
    // The goodbye arrives and is being played.
    assert!(rig.at_ms(200).audio("item_bye"));
    // Streamed in real time, the playout runs dry between chunks: not the end yet.
    rig.playout.queued_ms = 0;
    assert_eq!(rig.at_ms(250).input(Input::Tick), vec![]);
    rig.playout.queued_ms = 1_500;
    assert_eq!(rig.at_ms(300).input(Input::ResponseDone), vec![]);
    rig.playout.queued_ms = 100;
    assert_eq!(rig.at_ms(1_600).input(Input::Tick), vec![]);
    // Heard to the end: the call ends as the agent's hang-up.
    rig.playout.queued_ms = 0;
    assert_eq!(
        rig.at_ms(1_700).input(Input::Tick),
        vec![
            Effect::Hangup,
            state(CallState::Ending),
            ending(EndReason::AgentHangup, false),
        ]
    );
}

#[test]
fn a_hang_up_after_speech_leaves_the_far_end_time_to_play_the_last_packets() {
    let mut rig = Rig::configured(all_capabilities(), None, Duration::from_millis(250));
    rig.input(Input::Start {
        actions: vec![Action::Say("Bye.".into()), Action::Hangup],
        failure: None,
    });
    rig.playout.queued_ms = 400;
    rig.input(Input::ResponseDone);
    rig.at_ms(300).input(Input::ResponseDone);
    rig.playout.queued_ms = 0;
    // Played out at 500 ms: the hang-up comes 250 ms later, at the deadline the call asks for.
    assert_eq!(rig.at_ms(500).input(Input::Tick), vec![]);
    assert_eq!(rig.logic.deadline(), Some(Duration::from_millis(750)));
    assert_eq!(rig.at_ms(700).input(Input::Tick), vec![]);
    let effects = rig.at_ms(750).input(Input::Tick);
    assert_eq!(effects[0], Effect::Hangup, "{effects:?}");
}

#[test]
fn a_tool_that_faults_gives_the_model_an_error_and_the_caller_the_apology() {
    let mut rig = Rig::started(Vec::new());
    rig.input(Input::ToolCall {
        call_id: "t1".into(),
        name: "book".into(),
        arguments: "{}".into(),
    });
    let effects = rig.input(Input::Hook(HookResult::Tool(Err(fault()))));
    assert!(matches!(
        &effects[0],
        Effect::Record(EventKind::AgentFault { .. })
    ));
    assert!(effects.contains(&say("Sorry.")));
    // The agent is out: the next tool call is answered without it.
    let effects = rig.input(Input::ToolCall {
        call_id: "t2".into(),
        name: "book".into(),
        arguments: "{}".into(),
    });
    assert!(!effects.iter().any(|e| matches!(e, Effect::Hook(_))));
    assert!(effects.contains(&Effect::Model(Command::ToolResult {
        call_id: "t2".into(),
        output: r#"{"error":"the agent is unavailable"}"#.into(),
    })));
}

#[test]
fn an_agent_fault_plays_the_fallback_and_ends_the_call_as_failed() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    let effects = rig.input(Input::Hook(HookResult::Actions(Err(fault()))));
    assert!(matches!(
        &effects[0],
        Effect::Record(EventKind::AgentFault { .. })
    ));
    assert_eq!(effects.last(), Some(&say("Sorry.")));
    let effects = rig.input(Input::ResponseDone);
    assert_eq!(
        effects.last(),
        Some(&ending(EndReason::Failed("agent failed".into()), true))
    );
}

/// Start a transfer the agent asked for; returns the effects up to the leg's transfer.
fn transfer(rig: &mut Rig, target: &str) -> Vec<Effect> {
    rig.input(dtmf('0'));
    rig.actions(vec![Action::Transfer(target.into())])
}

#[test]
fn a_transfer_runs_to_its_outcome_and_the_agent_hears_it() {
    let mut rig = Rig::started(Vec::new());
    let effects = transfer(&mut rig, "sip:sales@example.org");
    assert_eq!(
        effects.last(),
        Some(&Effect::Transfer("sip:sales@example.org".into()))
    );
    assert_eq!(rig.input(Input::TransferStarted(Ok(()))), vec![]);
    let effects = rig.input(Input::TransferProgress {
        code: 100,
        reason: "Trying".into(),
    });
    assert_eq!(
        effects,
        vec![Effect::Record(EventKind::Transfer {
            target: "sip:sales@example.org".into(),
            status: "progress".into(),
            detail: "100 Trying".into(),
        })]
    );
    let effects = rig.input(Input::TransferOutcome {
        code: 200,
        reason: "OK".into(),
        success: true,
    });
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::TransferResult {
            target: "sip:sales@example.org".into(),
            result: Ok(()),
        }))
    );
    let effects = rig.actions(Vec::new());
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(
        effects.last(),
        Some(&ending(
            EndReason::Transferred("sip:sales@example.org".into()),
            false
        ))
    );
}

#[test]
fn a_failed_transfer_returns_the_call_to_the_agent() {
    let mut rig = Rig::started(Vec::new());
    transfer(&mut rig, "sip:sales@example.org");
    rig.input(Input::TransferStarted(Ok(())));
    let effects = rig.input(Input::TransferOutcome {
        code: 486,
        reason: "Busy Here".into(),
        success: false,
    });
    assert_eq!(effects[1], state(CallState::Active));
    assert_eq!(
        effects[2],
        Effect::Hook(Hook::TransferResult {
            target: "sip:sales@example.org".into(),
            result: Err("486 Busy Here".into()),
        })
    );
    // The call goes on: the far end hanging up now is a plain caller hang-up.
    rig.actions(Vec::new());
    assert_eq!(
        rig.input(Input::FarEndHangup).last(),
        Some(&ending(EndReason::CallerHangup, false))
    );
}

#[test]
fn a_transfer_the_leg_cannot_start_is_reported_to_the_agent() {
    let mut rig = Rig::started(Vec::new());
    transfer(&mut rig, "sip:sales@example.org");
    let effects = rig.input(Input::TransferStarted(Err("no route".into())));
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::TransferResult {
            target: "sip:sales@example.org".into(),
            result: Err("no route".into()),
        }))
    );
}

#[test]
fn the_far_end_hanging_up_during_a_transfer_means_it_was_transferred() {
    let mut rig = Rig::started(Vec::new());
    transfer(&mut rig, "sip:sales@example.org");
    rig.input(Input::TransferStarted(Ok(())));
    assert_eq!(
        rig.input(Input::FarEndHangup).last(),
        Some(&ending(
            EndReason::Transferred("sip:sales@example.org".into()),
            false
        ))
    );
}

#[test]
fn a_leg_without_transfer_refuses_it_as_not_allowed() {
    let mut rig = Rig::with(Capabilities::of(&[Capability::Audio]), None);
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    rig.input(Input::ResponseDone);
    let effects = transfer(&mut rig, "sip:sales@example.org");
    let refusal = "not-allowed: this call cannot be transferred".to_string();
    assert!(effects.contains(&Effect::Record(EventKind::ActionRefused {
        action: Action::Transfer("sip:sales@example.org".into()),
        reason: refusal.clone(),
    })));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Transfer(_))));
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::TransferResult {
            target: "sip:sales@example.org".into(),
            result: Err(refusal),
        }))
    );
}

#[test]
fn a_leg_without_digits_out_refuses_send_dtmf() {
    let mut rig = Rig::with(Capabilities::of(&[Capability::Transfer]), None);
    let effects = rig.input(Input::Start {
        actions: vec![Action::SendDtmf("123".into())],
        failure: None,
    });
    assert!(!effects.contains(&Effect::SendDigits("123".into())));
    let refusal = "not-allowed: this call cannot send keypad digits".to_string();
    assert!(effects.contains(&Effect::Record(EventKind::ActionRefused {
        action: Action::SendDtmf("123".into()),
        reason: refusal.clone(),
    })));
    // The agent hears of it too.
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Event(Notification::Refused {
            action: Action::SendDtmf("123".into()),
            reason: refusal,
        })))
    );
    let mut rig = Rig::new();
    let effects = rig.input(Input::Start {
        actions: vec![Action::SendDtmf("123".into())],
        failure: None,
    });
    assert_eq!(effects.last(), Some(&Effect::SendDigits("123".into())));
}

#[test]
fn a_leg_without_transfer_hangs_up_after_the_apology_instead_of_the_fallback_transfer() {
    let mut rig = Rig::with(Capabilities::default(), Some("sip:desk@example.org"));
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: Some("agent failed".into()),
    });
    let effects = rig.input(Input::ResponseDone);
    assert!(matches!(
        effects[0],
        Effect::Record(EventKind::ActionRefused { .. })
    ));
    assert_eq!(effects[1], Effect::Hangup);
}
