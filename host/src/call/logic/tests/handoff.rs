//! Hand-off to another agent (`agent:NAME`): the old agent ends, the new one starts with the
//! conversation so far, the model follows, the greeting is timed; refusals and failures.

use super::*;

const TARGET: &str = "agent:appointments";

/// A started call where the caller said something and the agent answered, then asked to hand
/// over (after its short say): the effects of the hand-off starting.
fn handing_over() -> (Rig, Vec<Effect>) {
    let mut rig = Rig::started(Vec::new());
    for (role, text) in [(Role::Agent, "Hello."), (Role::Caller, "I need a check-up")] {
        rig.input(Input::Transcript {
            role,
            text: text.into(),
            is_final: true,
        });
        rig.actions(Vec::new());
    }
    rig.input(dtmf('2'));
    rig.actions(vec![
        Action::Say("Passing you on.".into()),
        Action::Transfer(TARGET.into()),
    ]);
    // The say is generated and played; then the hand-off starts.
    let effects = rig.at_ms(1_000).input(Input::ResponseDone);
    (rig, effects)
}

fn handoff_record(status: &str, detail: &str) -> Effect {
    Effect::Record(EventKind::Handoff {
        from: "first".into(),
        to: "appointments".into(),
        status: status.into(),
        detail: detail.into(),
        gap_ms: None,
    })
}

fn started(new_session: bool) -> HandedOff {
    HandedOff {
        version: "0.2.0".into(),
        actions: vec![Action::SendDtmf("1".into())],
        greeting: Some("Hi, appointments here.".into()),
        new_session,
        end_call: false,
        mcp_tools: Default::default(),
        conversation: ConversationConfig::off(),
    }
}

#[test]
fn a_hand_off_ends_the_old_agent_then_starts_the_new_one_with_the_conversation() {
    let (_, effects) = handing_over();
    let history = vec![
        (Role::Agent, "Hello.".to_string()),
        (Role::Caller, "I need a check-up".to_string()),
    ];
    assert_eq!(
        effects,
        vec![
            state(CallState::Transferring),
            handoff_record("requested", ""),
            Effect::EndAgent(EndReason::Transferred(TARGET.into())),
            Effect::StartAgent(HandoffRequest {
                from: "first".into(),
                to: "appointments".into(),
                summary: "agent: Hello.\ncaller: I need a check-up".into(),
                history,
            }),
        ]
    );
}

#[test]
fn the_new_agent_greets_through_the_updated_session_then_its_actions_run() {
    let (mut rig, _) = handing_over();
    let effects = rig.at_ms(1_100).input(Input::HandedOff(Ok(started(false))));
    assert_eq!(
        effects,
        vec![
            state(CallState::Active),
            handoff_record(HANDED_OFF, "0.2.0"),
            say("Hi, appointments here."),
            actions_record(&[Action::SendDtmf("1".into())]),
            Effect::SendDigits("1".into()),
        ]
    );
    // The next hooks go to the new agent, and the next hand-off is from it.
    let effects = rig.input(dtmf('3'));
    assert_eq!(effects.last(), Some(&Effect::Hook(Hook::Dtmf("3".into()))));
    rig.actions(vec![Action::Transfer("agent:first".into())]);
    let effects = rig.at_ms(2_000).input(Input::ResponseDone);
    assert!(effects.contains(&Effect::Record(EventKind::Handoff {
        from: "appointments".into(),
        to: "first".into(),
        status: "requested".into(),
        detail: String::new(),
        gap_ms: None,
    })));
}

#[test]
fn the_gap_is_timed_from_the_request_to_the_first_greeting_audio_out() {
    let (mut rig, _) = handing_over();
    rig.at_ms(1_100).input(Input::HandedOff(Ok(started(true))));
    // A new session speaks the greeting itself: the logic asks for nothing. Its first audio
    // arrives at 1.3 s behind 50 ms still queued.
    rig.playout.queued_ms = 50;
    rig.at_ms(1_300);
    assert!(rig.audio("greeting"));
    assert_eq!(
        rig.input(Input::Tick),
        vec![Effect::Record(EventKind::Handoff {
            from: "first".into(),
            to: "appointments".into(),
            status: "greeting-heard".into(),
            detail: String::new(),
            gap_ms: Some(350),
        })]
    );
    // Once only.
    assert!(rig.audio("next"));
    assert_eq!(rig.input(Input::Tick), vec![]);
    rig.playout.queued_ms = 0;
    // The new session's greeting is the response a hang-up waits for.
    rig.input(dtmf('9'));
    rig.actions(vec![Action::Hangup]);
    assert!(!rig.input(Input::Tick).contains(&Effect::Hangup));
    assert!(rig.input(Input::ResponseDone).contains(&Effect::Hangup));
}

#[test]
fn a_hand_off_the_leg_cannot_carry_is_refused_and_the_agent_hears_why() {
    let caps = Capabilities::of(&[Capability::Transfer]);
    let mut rig = Rig::with(caps, None);
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    rig.input(Input::ResponseDone);
    rig.input(dtmf('2'));
    let effects = rig.actions(vec![Action::Transfer(TARGET.into())]);
    let reason = LegError::NotAllowed(Capability::Handoff).to_string();
    assert!(reason.contains("another agent"), "{reason}");
    assert!(effects.contains(&Effect::Record(EventKind::ActionRefused {
        action: Action::Transfer(TARGET.into()),
        reason: reason.clone(),
    })));
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::TransferResult {
            target: TARGET.into(),
            result: Err(reason),
        }))
    );
    assert!(!effects.iter().any(|e| matches!(e, Effect::EndAgent(_))));
}

#[test]
fn a_rejecting_or_failing_new_agent_gets_the_fallback() {
    let (mut rig, _) = handing_over();
    let effects = rig.input(Input::HandedOff(Err(HandoffFailed::Rejected {
        code: 486,
        reason: "busy".into(),
    })));
    assert_eq!(
        effects,
        vec![
            state(CallState::Active),
            handoff_record("failed", "agent rejected the call: 486 busy"),
            actions_record(&[Action::Say("Sorry.".into()), Action::Hangup]),
            say("Sorry."),
        ]
    );
    // No agent hears anything more; the apology is heard, then the call hangs up as failed.
    assert_eq!(rig.input(dtmf('1')), vec![dtmf_record('1')]);
    let effects = rig.input(Input::ResponseDone);
    assert_eq!(effects[0], Effect::Hangup);
    assert_eq!(
        effects.last(),
        Some(&ending(EndReason::Failed("agent failed".into()), true))
    );

    let (mut rig, _) = handing_over();
    let effects = rig.input(Input::HandedOff(Err(HandoffFailed::Fault(fault()))));
    assert!(effects.contains(&Effect::Record(EventKind::AgentFault { fault: fault() })));
    assert_eq!(effects.last(), Some(&say("Sorry.")));
}

#[test]
fn the_api_hands_off_at_once_cutting_what_the_old_agent_was_saying() {
    let mut rig = Rig::started(Vec::new());
    rig.input(dtmf('1'));
    rig.actions(vec![Action::Say("A long answer".into())]);
    assert!(rig.audio("old"));
    rig.playout.queued_ms = 2_000;
    rig.playout.played_ms = 300;
    let effects = rig.input(Input::Command(Some(CallCommand::Transfer(TARGET.into()))));
    assert_eq!(
        effects[..3],
        [
            state(CallState::Transferring),
            handoff_record("requested", ""),
            Effect::Model(Command::CancelResponse),
        ]
    );
    assert_eq!(
        effects[3],
        Effect::Model(Command::Truncate {
            item_id: "old".into(),
            audio_end_ms: 300,
        })
    );
    assert!(matches!(effects.last(), Some(Effect::StartAgent(r)) if r.to == "appointments"));
    // Late audio of the cut answer is not played.
    assert!(!rig.audio("old"));
}
