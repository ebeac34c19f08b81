//! Answering-machine detection as the call logic sees it: findings arrive as inputs beside
//! the call, are recorded, and reach the agent as notifications; nothing waits for them.

use super::*;
use crate::domain::agent_event::MachineVerdict;

fn outbound_rig() -> Rig {
    let mut rig = Rig::new();
    rig.logic.config.outbound = true;
    rig
}

fn verdict(verdict: MachineVerdict, at_ms: u64) -> Input {
    Input::Machine(AmdEvent::Verdict { verdict, at_ms })
}

#[test]
fn the_greeting_goes_out_at_the_answer_before_any_verdict() {
    let mut rig = outbound_rig();
    let effects = rig.input(Input::Start {
        actions: vec![Action::Say("Hi, this is the clinic.".into())],
        failure: None,
    });
    assert!(
        effects.contains(&say("Hi, this is the clinic.")),
        "{effects:?}"
    );
    // The agent hears of the answer; then, later, of the person.
    assert_eq!(rig.actions(Vec::new()), vec![]);
    rig.at_ms(1800);
    assert_eq!(
        rig.input(verdict(MachineVerdict::Human, 1700)),
        vec![
            Effect::Record(EventKind::MachineDetection {
                verdict: MachineVerdict::Human,
                at_ms: 1700
            }),
            Effect::Hook(Hook::Event(Notification::MachineDetected(
                MachineVerdict::Human
            ))),
        ]
    );
}

#[test]
fn a_machine_then_its_beep_reach_the_agent_which_leaves_a_message_and_hangs_up() {
    let mut rig = outbound_rig();
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: None,
    });
    rig.actions(Vec::new());
    rig.input(Input::ResponseDone);
    let effects = rig
        .at_ms(2700)
        .input(verdict(MachineVerdict::Machine, 2650));
    assert_eq!(
        effects.last(),
        Some(&Effect::Hook(Hook::Event(Notification::MachineDetected(
            MachineVerdict::Machine
        ))))
    );
    assert_eq!(rig.actions(Vec::new()), vec![]);
    let beep = Input::Machine(AmdEvent::Beep {
        at_ms: 6100,
        end_ms: 6600,
        hz: 1000,
    });
    assert_eq!(
        rig.at_ms(6650).input(beep),
        vec![
            Effect::Record(EventKind::VoicemailBeep {
                at_ms: 6100,
                end_ms: 6600,
                hz: 1000
            }),
            Effect::Hook(Hook::Event(Notification::VoicemailBeep)),
        ]
    );
    let message = Action::Say("This is the clinic, please call us back.".into());
    let effects = rig.actions(vec![message.clone(), Action::Hangup]);
    assert!(
        effects.contains(&say("This is the clinic, please call us back.")),
        "{effects:?}"
    );
    // The hang-up waits for the message to be heard.
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Hangup)),
        "{effects:?}"
    );
}

#[test]
fn a_failed_agent_still_gets_the_verdict_recorded() {
    let mut rig = outbound_rig();
    rig.input(Input::Start {
        actions: Vec::new(),
        failure: Some("agent failed".into()),
    });
    let effects = rig.input(verdict(MachineVerdict::Machine, 2500));
    assert_eq!(
        effects,
        vec![Effect::Record(EventKind::MachineDetection {
            verdict: MachineVerdict::Machine,
            at_ms: 2500
        })]
    );
}
