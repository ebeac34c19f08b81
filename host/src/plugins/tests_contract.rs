//! What `switchboard:agent@0.2.0` added, end to end through a real component built with the SDK
//! (tests/fixtures/contract): the call's context and headers, requests that are not actions
//! (outcome, expectation, turn options), functions declared for later issues, and `on-event`.

use std::path::PathBuf;

use super::contract::Contract;
use super::deploy;
use super::harness::Harness;
use super::runtime::test_call_info;
use crate::domain::Action;
use crate::domain::agent_event::{AgentRequest, CallProgress, Expectation, Notification};
use crate::domain::conversation::TurnLimits;

async fn contract_agent() -> (Harness, tempfile::TempDir) {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/contract");
    let wasm = deploy::build(&crate_dir).expect("the contract fixture builds");
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("contract.toml");
    std::fs::write(&manifest, "name = \"contract\"\n").unwrap();
    let h = Harness::load(&wasm, &manifest).await.expect("loads");
    (h, dir)
}

fn said(actions: &[Action]) -> &str {
    match actions {
        [Action::Say(text)] => text,
        other => panic!("expected one say, got {other:?}"),
    }
}

#[tokio::test]
async fn the_0_2_0_imports_and_on_event_reach_the_call() {
    let (h, _dir) = contract_agent().await;
    assert_eq!(h.version().contract(), Contract::V0_2);
    let mut info = test_call_info("c-1", "+15550100001", "4000");
    info.headers = vec![("X-Account".into(), "42".into())];
    let mut call = h.call_with(info).await.unwrap();
    call.start().await.unwrap();

    // Outcome and expectation go to the call as requests, after the hook and in order.
    let reply = call.dtmf("1").await.unwrap();
    assert_eq!(said(&reply), "outcome Ok(()) expect Ok(())");
    assert_eq!(
        call.session.take_requests(),
        vec![
            AgentRequest::SetOutcome("confirmed".into()),
            AgentRequest::Expect(Expectation::Digits { min: 4, max: 6 }),
        ]
    );
    assert!(call.session.take_requests().is_empty());
    let reply = call.dtmf("4").await.unwrap();
    assert!(said(&reply).starts_with("Err(Error::Invalid("), "{reply:?}");
    assert!(call.session.take_requests().is_empty());

    let reply = call.dtmf("2").await.unwrap();
    assert_eq!(
        said(&reply),
        r#"caller +15550100001 headers [("X-Account", "42")] handoff None"#
    );

    // The call's own fillers and maximum length go to the call as a request.
    let reply = call.dtmf("3").await.unwrap();
    assert_eq!(said(&reply), "Ok(())");
    assert_eq!(
        call.session.take_requests(),
        vec![AgentRequest::TurnLimits(TurnLimits {
            fillers: Some(vec!["One moment.".into()]),
            reprompt_after_ms: None,
            hangup_after_ms: None,
            max_call_ms: Some(600_000),
        })]
    );

    // Declared for a later issue: a clear `unavailable`, and the call goes on.
    let reply = call.dtmf("5").await.unwrap();
    assert!(
        said(&reply).contains("Unavailable") && said(&reply).contains("issue 33"),
        "{reply:?}"
    );

    let session = &mut call.session;
    for (notification, expected) in [
        (
            Notification::SpeechStarted,
            "event CallEvent::SpeechStarted",
        ),
        (
            Notification::BargeIn { heard_ms: 1200 },
            "event CallEvent::BargeIn(1200)",
        ),
        (
            Notification::Progress(CallProgress::Answered),
            "event CallEvent::Progress(CallProgress::Answered)",
        ),
        (
            Notification::Silence { ms: 10_000 },
            "event CallEvent::Silence(10000)",
        ),
        (
            Notification::EndingSoon { ms: 60_000 },
            "event CallEvent::EndingSoon(60000)",
        ),
    ] {
        let reply = session.notify(&notification).await.unwrap();
        assert_eq!(said(&reply), expected);
    }
    let refused = Notification::Refused {
        action: Action::SendDtmf("1".into()),
        reason: "this leg has no keypad out".into(),
    };
    let reply = session.notify(&refused).await.unwrap();
    assert!(
        said(&reply).contains("SendDtmf") && said(&reply).contains("NotAllowed"),
        "{reply:?}"
    );
}
