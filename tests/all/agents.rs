//! The example agents load, describe themselves and act as scripted sessions expect.

use std::collections::BTreeMap;

use crate::support::agents::{example_agents, example_manifest};
use switchboard::domain::{Action, Direction, EndReason, Role};
use switchboard::plugins::harness::{Harness, Step};
use switchboard::plugins::runtime::{AgentSettings, AgentsConfig, test_call_info};
use switchboard::plugins::{StartOutcome, ToolOutcome};

async fn load(name: &str) -> Harness {
    let wasm = example_agents().join(format!("{name}.wasm"));
    Harness::load(&wasm, example_manifest(name))
        .await
        .expect("agent loads")
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
async fn menu_is_a_keypad_menu() {
    let h = load("menu").await;
    assert_eq!(h.version().info.name, "menu");
    assert_eq!(h.version().info.numbers, vec!["1000"]);
    let mut call = h.call("+15550100001", "1000").await.unwrap();
    let start = call.start().await.unwrap();
    assert!(greeting(&start).contains("Press 1 for opening hours"));

    let opening = call.dtmf("1").await.unwrap();
    assert!(says(&opening, "Monday to Friday"), "{opening:?}");
    let collect = call.dtmf("3").await.unwrap();
    assert!(
        matches!(&collect[..], [Action::CollectDigits(r)] if r.max_digits == 6 && r.terminator.as_deref() == Some("#"))
    );
    let order = call.dtmf("123456").await.unwrap();
    assert!(says(&order, "Order 1 2 3 4 5 6"), "{order:?}");
    let operator = call.dtmf("0").await.unwrap();
    assert_eq!(
        operator,
        vec![
            Action::Say("Connecting you to the operator.".into()),
            Action::Transfer("sip:operator@127.0.0.1".into())
        ]
    );
    let bye = call.dtmf("#").await.unwrap();
    assert_eq!(bye.last(), Some(&Action::Hangup));
    call.end(EndReason::AgentHangup).await.unwrap();
}

#[tokio::test]
async fn menu_gives_up_after_three_wrong_keys() {
    let h = load("menu").await;
    let mut call = h.call("100", "1000").await.unwrap();
    call.start().await.unwrap();
    let replies = call
        .run(&[
            Step::Dtmf("5".into()),
            Step::Dtmf("6".into()),
            Step::Dtmf("7".into()),
        ])
        .await;
    let replies: Vec<Vec<Action>> = replies.into_iter().map(Result::unwrap).collect();
    assert!(says(&replies[0], "5 is not an option"));
    assert!(!replies[1].contains(&Action::Hangup));
    assert_eq!(replies[2].last(), Some(&Action::Hangup));
}

#[tokio::test]
async fn menu_reads_operator_config_over_manifest_defaults() {
    let wasm = example_agents().join("menu.wasm");
    let mut settings = BTreeMap::new();
    let mut config = BTreeMap::new();
    config.insert("opening-hours".to_string(), "around the clock".to_string());
    // Undeclared keys stay invisible to the agent.
    config.insert("undeclared".to_string(), "x".to_string());
    settings.insert(
        "menu".to_string(),
        AgentSettings {
            config,
            ..AgentSettings::default()
        },
    );
    let h = Harness::load_with(
        &wasm,
        example_manifest("menu"),
        AgentsConfig::default(),
        settings,
    )
    .await
    .unwrap();
    let mut call = h.call("100", "1000").await.unwrap();
    call.start().await.unwrap();
    assert!(says(&call.dtmf("1").await.unwrap(), "around the clock"));
}

#[tokio::test]
async fn receptionist_tools_messages_and_transfer() {
    receptionist_script(&load("receptionist").await, "2000").await;
}

/// What every receptionist (the Rust one and its twins in other languages) does on `callee`:
/// greeting, tools, messages in kv, transfer by voice, by tool and by keypad 0.
pub(crate) async fn receptionist_script(h: &Harness, callee: &str) {
    let mut call = h.call("+15550100009", callee).await.unwrap();
    let start = call.start().await.unwrap();
    let StartOutcome::Accept { config, .. } = &start else {
        panic!("{start:?}")
    };
    let tools: Vec<&str> = config.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tools,
        ["opening_hours", "take_message", "transfer_to_person"]
    );
    assert!(greeting(&start).starts_with("Thank you for calling"));

    let hours = call.tool_call("opening_hours", "{}").await.unwrap();
    assert!(
        hours.result.as_ref().unwrap().contains("Monday to Friday"),
        "{hours:?}"
    );

    let msg = call
        .tool_call(
            "take_message",
            r#"{"name":"Ada","message":"Please call me back"}"#,
        )
        .await
        .unwrap();
    assert!(
        msg.result.as_ref().unwrap().contains("Message 1 saved"),
        "{msg:?}"
    );
    let again = call
        .tool_call("take_message", r#"{"name":"Bob","message":"Hi"}"#)
        .await
        .unwrap();
    assert!(again.result.as_ref().unwrap().contains("Message 2 saved"));
    let bad = call.tool_call("take_message", "not json").await.unwrap();
    assert!(bad.result.unwrap_err().contains("bad arguments"));

    // Asking for a person by voice transfers, through effects queued in on-transcript.
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
    // A failed transfer keeps the call going with an offer to take a message.
    let failed = call
        .transfer_result("sip:front-desk@127.0.0.1", Err("486 busy".into()))
        .await
        .unwrap();
    assert!(says(&failed, "take a message"));
    // Key 2 hands the caller to the appointments agent (a hand-off its manifest grants).
    let handoff = call.dtmf("2").await.unwrap();
    assert_eq!(
        handoff,
        vec![
            Action::Say("Of course, I am passing you to our appointments desk.".into()),
            Action::Transfer("agent:appointments".into())
        ]
    );
    call.transfer_result("agent:appointments", Err("not-allowed".into()))
        .await
        .unwrap();
    let tool: ToolOutcome = call.tool_call("transfer_to_person", "{}").await.unwrap();
    assert_eq!(
        tool.actions.last(),
        Some(&Action::Transfer("sip:front-desk@127.0.0.1".into()))
    );
    call.end(EndReason::Transferred("sip:front-desk@127.0.0.1".into()))
        .await
        .unwrap();

    // Keypad 0 on a new call transfers too; other keys do nothing.
    let mut call = h.call("+15550100009", callee).await.unwrap();
    call.start().await.unwrap();
    assert_eq!(call.dtmf("5").await.unwrap(), vec![]);
    assert_eq!(
        call.dtmf("0").await.unwrap(),
        vec![
            Action::Say("One moment, I am putting you through.".into()),
            Action::Transfer("sip:front-desk@127.0.0.1".into())
        ]
    );
    call.end(EndReason::Transferred("sip:front-desk@127.0.0.1".into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn appointments_confirm_reschedule_and_operator() {
    let h = load("appointments").await;

    // Keypad 1: the confirm tool runs and the confirmation is spoken, then hang-up.
    let mut call = h.call("+1 555 010 0001", "3000").await.unwrap();
    let start = call.start().await.unwrap();
    let g = greeting(&start);
    assert!(
        g.contains("Hello Alex") && g.contains("Doctor Rivera") && g.contains("Press 1"),
        "{g}"
    );
    let confirm = call.dtmf("1").await.unwrap();
    assert!(says(&confirm, "is confirmed"), "{confirm:?}");
    assert_eq!(confirm.last(), Some(&Action::Hangup));
    call.end(EndReason::AgentHangup).await.unwrap();

    // The confirmation persisted in kv: a tool call on a new call sees the status.
    let mut call = h.call("+15550100001", "3000").await.unwrap();
    call.start().await.unwrap();
    let out = call
        .tool_call(
            "reschedule_appointment",
            r#"{"preferred_time":"next Monday"}"#,
        )
        .await
        .unwrap();
    assert!(
        out.result
            .as_ref()
            .unwrap()
            .contains("reschedule_requested"),
        "{out:?}"
    );
    let out = call
        .tool_call("cancel_appointment", r#"{"reason":"moved away"}"#)
        .await
        .unwrap();
    assert!(out.result.unwrap().contains("cancelled"));

    // Keypad 2 asks for another time; 0 transfers to the operator.
    let mut call = h.call("+15550100002", "3000").await.unwrap();
    assert!(greeting(&call.start().await.unwrap()).contains("Hello Sam"));
    assert!(says(&call.dtmf("2").await.unwrap(), "Which day and time"));
    let operator = call.dtmf("0").await.unwrap();
    assert_eq!(
        operator.last(),
        Some(&Action::Transfer("sip:operator@127.0.0.1".into()))
    );

    // Outbound calls look the callee up; unknown numbers are offered the front desk.
    let mut info = test_call_info("out-1", "3000", "1001");
    info.direction = Direction::Outbound;
    let mut call = h.call_with(info).await.unwrap();
    assert!(greeting(&call.start().await.unwrap()).contains("Hello Jordan"));
    let mut call = h.call("+15559999999", "3000").await.unwrap();
    assert!(greeting(&call.start().await.unwrap()).contains("could not find an appointment"));
    let confirm = call.dtmf("1").await.unwrap();
    assert_eq!(
        confirm.last(),
        Some(&Action::Transfer("sip:operator@127.0.0.1".into()))
    );
}
