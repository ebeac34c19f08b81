//! The wave-1 example agents, built against `switchboard:agent@0.1.0` and kept as built in
//! tests/fixtures/wave1, run unchanged on this host: they load, are recognised as 0.1.0, describe
//! themselves, and answer the same script with the same actions as the current (0.2.0) builds of
//! the same agents do in tests/agents.rs.

use std::path::PathBuf;

use super::contract::Contract;
use super::harness::Harness;
use super::session::StartOutcome;
use crate::domain::agent_event::Notification;
use crate::domain::{Action, EndReason, Role};

async fn wave1(name: &str) -> Harness {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wave1");
    let h = Harness::load(
        dir.join(format!("{name}.wasm")),
        dir.join(format!("{name}.toml")),
    )
    .await
    .unwrap_or_else(|e| panic!("the wave-1 {name} loads: {e:#}"));
    assert_eq!(h.version().contract(), Contract::V0_1, "{name}");
    assert_eq!(h.version().info.name, name);
    h
}

fn says(actions: &[Action], needle: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Say(t) if t.contains(needle)))
}

fn greeting(outcome: &StartOutcome) -> String {
    match outcome {
        StartOutcome::Accept { config, .. } => config.greeting.clone().unwrap_or_default(),
        StartOutcome::Reject(r) => panic!("rejected: {r:?}"),
    }
}

#[tokio::test]
async fn wave1_menu_runs_unchanged() {
    let h = wave1("menu").await;
    assert_eq!(h.version().info.numbers, vec!["1000"]);
    let mut call = h.call("+15550100001", "1000").await.unwrap();
    let start = call.start().await.unwrap();
    assert!(greeting(&start).contains("Press 1 for opening hours"));
    assert!(says(&call.dtmf("1").await.unwrap(), "Monday to Friday"));
    let collect = call.dtmf("3").await.unwrap();
    assert!(
        matches!(&collect[..], [Action::CollectDigits(r)] if r.max_digits == 6 && r.terminator.as_deref() == Some("#")),
        "{collect:?}"
    );
    assert!(says(
        &call.dtmf("123456").await.unwrap(),
        "Order 1 2 3 4 5 6"
    ));
    assert_eq!(
        call.dtmf("0").await.unwrap(),
        vec![
            Action::Say("Connecting you to the operator.".into()),
            Action::Transfer("sip:operator@127.0.0.1".into())
        ]
    );
    // A 0.1.0 agent has no on-event: notifications are not delivered, and nothing breaks.
    let session = &mut call.session;
    assert!(
        session
            .notify(&Notification::SpeechStarted)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(session.take_requests().is_empty());
    assert_eq!(call.dtmf("#").await.unwrap().last(), Some(&Action::Hangup));
    call.end(EndReason::AgentHangup).await.unwrap();
}

#[tokio::test]
async fn wave1_receptionist_runs_unchanged() {
    let h = wave1("receptionist").await;
    let mut call = h.call("+15550100009", "2000").await.unwrap();
    let start = call.start().await.unwrap();
    assert!(greeting(&start).starts_with("Thank you for calling"));
    let hours = call.tool_call("opening_hours", "{}").await.unwrap();
    assert!(hours.result.unwrap().contains("Monday to Friday"));
    let actions = call
        .transcript(Role::Caller, "Can I speak to a person please")
        .await
        .unwrap();
    assert_eq!(
        actions,
        vec![
            Action::Say("One moment, I am putting you through.".into()),
            Action::Transfer("sip:front-desk@127.0.0.1".into())
        ]
    );
    let failed = call
        .transfer_result("sip:front-desk@127.0.0.1", Err("486 busy".into()))
        .await
        .unwrap();
    assert!(says(&failed, "take a message"));
    call.end(EndReason::CallerHangup).await.unwrap();
}

#[tokio::test]
async fn wave1_appointments_runs_unchanged() {
    // kv (the confirmation is stored) goes through the same host imports as for 0.2.0.
    let h = wave1("appointments").await;
    let mut call = h.call("+1 555 010 0001", "3000").await.unwrap();
    let g = greeting(&call.start().await.unwrap());
    assert!(g.contains("Hello Alex") && g.contains("Press 1"), "{g}");
    let confirm = call.dtmf("1").await.unwrap();
    assert!(says(&confirm, "is confirmed"), "{confirm:?}");
    assert_eq!(confirm.last(), Some(&Action::Hangup));
    call.end(EndReason::AgentHangup).await.unwrap();

    let mut call = h.call("+15550100002", "3000").await.unwrap();
    assert!(greeting(&call.start().await.unwrap()).contains("Hello Sam"));
    assert_eq!(
        call.dtmf("0").await.unwrap().last(),
        Some(&Action::Transfer("sip:operator@127.0.0.1".into()))
    );
    call.end(EndReason::Transferred("sip:operator@127.0.0.1".into()))
        .await
        .unwrap();
}
