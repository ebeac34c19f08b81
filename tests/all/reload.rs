//! Hot reload: running calls keep their version, new calls get the new one, broken builds never
//! replace a working version, and the watcher does not loop on its own reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::agents::{AgentsDir, fixture, greeter};
use switchboard::domain::Action;
use switchboard::plugins::runtime::{AgentsConfig, Runtime, test_call_info};
use switchboard::plugins::{AgentEvent, AgentEventKind, Registry, StartOutcome, watcher};
use tokio::sync::broadcast;

const MANIFEST: &str = "name = \"greeter\"\nnumbers = [\"4000\"]\n";

async fn next_event(rx: &mut broadcast::Receiver<AgentEvent>) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a reload event within 30 s")
        .expect("event channel open")
}

fn greeting(out: &StartOutcome) -> String {
    match out {
        StartOutcome::Accept { config, .. } => config.greeting.clone().unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_calls_keep_v1_new_calls_get_v2_and_broken_builds_are_refused() {
    let (v1, v2) = (greeter("1"), greeter("2"));
    let trap = fixture("describe-trap");
    let dir = AgentsDir::new();
    dir.install("greeter", &v1, MANIFEST);

    let data = tempfile::tempdir().unwrap();
    let config = AgentsConfig {
        dir: dir.path().to_path_buf(),
        max_instances: 128,
        ..AgentsConfig::default()
    };
    let rt = Runtime::new(config, BTreeMap::new(), data.path()).unwrap();
    let registry = Registry::new(rt.clone(), BTreeMap::new()).unwrap();
    let mut events = registry.subscribe();
    let _watch = watcher::watch(registry.clone());
    let first = next_event(&mut events).await;
    assert!(
        matches!(first.kind, AgentEventKind::Loaded { .. }),
        "{first:?}"
    );

    // 50 calls start on v1 and stay live across the reload.
    let mut v1_calls = Vec::new();
    for i in 0..50 {
        let resolved = registry
            .resolve("sip:4000@127.0.0.1")
            .expect("route to greeter");
        let mut session = rt
            .session(&resolved.agent, &format!("v1-{i}"))
            .await
            .unwrap();
        let out = session
            .start(&test_call_info("c", "1", "4000"))
            .await
            .unwrap();
        assert_eq!(greeting(&out), "hello from v1");
        v1_calls.push(session);
    }
    let v1_hash = registry.resolve("4000").unwrap().agent.hash.clone();

    let published = Instant::now();
    dir.install("greeter", &v2, MANIFEST);
    let ev = next_event(&mut events).await;
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    let live_after = published.elapsed();
    assert!(
        live_after < Duration::from_secs(10),
        "v2 live after {live_after:?}"
    );
    let v2_agent = registry.resolve("4000").unwrap().agent;
    assert_ne!(v2_agent.hash, v1_hash);
    let mut fresh = rt.session(&v2_agent, "v2-new").await.unwrap();
    assert_eq!(
        greeting(
            &fresh
                .start(&test_call_info("c", "1", "4000"))
                .await
                .unwrap()
        ),
        "hello from v2"
    );
    for session in &mut v1_calls {
        assert_eq!(
            session.dtmf("1").await.unwrap(),
            vec![Action::Say("v1".into())]
        );
        assert_eq!(session.version().hash, v1_hash);
    }

    // A corrupt file is refused and reported; v2 stays live; no reload loop follows.
    let attempts = registry.load_attempts();
    dir.write("greeter.wasm", b"\0asm\x0d\0\x01\0 this is not a component");
    let ev = next_event(&mut events).await;
    let AgentEventKind::Failed { error } = &ev.kind else {
        panic!("{ev:?}")
    };
    assert!(
        error.contains("greeter.wasm") && error.contains("does not compile"),
        "{error}"
    );
    assert_eq!(registry.resolve("4000").unwrap().agent.hash, v2_agent.hash);

    // A build whose describe() traps is refused too.
    dir.write("greeter.wasm", &std::fs::read(&trap).unwrap());
    let ev = next_event(&mut events).await;
    let AgentEventKind::Failed { error } = &ev.kind else {
        panic!("{ev:?}")
    };
    assert!(error.contains("describe() failed"), "{error}");
    assert_eq!(registry.resolve("4000").unwrap().agent.hash, v2_agent.hash);

    // Quiet period: exactly one compile per write, nothing triggered by our own reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(registry.load_attempts(), attempts + 2);
    assert!(events.try_recv().is_err(), "no further reload events");

    // The history keeps the failures for the API.
    let history = registry.history();
    assert_eq!(history.len(), 4);
    assert!(matches!(history[2].kind, AgentEventKind::Failed { .. }));

    // Restoring v2's exact bytes is a no-op (content hash), restoring v1 goes live.
    dir.write("greeter.wasm", &std::fs::read(&v1).unwrap());
    let ev = next_event(&mut events).await;
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    assert_eq!(registry.resolve("4000").unwrap().agent.hash, v1_hash);
    for mut s in v1_calls {
        s.end(&switchboard::domain::EndReason::CallerHangup)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn manifest_numbers_merge_with_config_routes_and_conflicts_are_refused() {
    let dir = AgentsDir::new();
    let v1 = greeter("1");
    dir.install(
        "greeter",
        &v1,
        "name = \"greeter\"\nnumbers = [\"+49 30 *\"]\n",
    );
    dir.install("other", &v1, "name = \"other\"\n");
    let data = tempfile::tempdir().unwrap();
    let config = AgentsConfig {
        dir: dir.path().to_path_buf(),
        max_instances: 16,
        default: Some("greeter".into()),
        ..AgentsConfig::default()
    };
    let rt = Runtime::new(config, BTreeMap::new(), data.path()).unwrap();
    let routes = BTreeMap::from([
        ("1000".to_string(), "greeter".to_string()),
        ("+4930*".to_string(), "greeter".to_string()),
    ]);
    let registry: Arc<Registry> = Registry::new(rt, routes).unwrap();
    let errors = registry.load_all().await;
    // `other` is refused: its describe() says "greeter" (a distinct manifest name).
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains("describe() says the agent is `greeter`")
    );
    assert_eq!(
        registry.resolve("tel:+49-30-555").unwrap().agent.name(),
        "greeter"
    );
    assert_eq!(registry.resolve("1000").unwrap().agent.name(), "greeter");
    assert!(
        registry.resolve("999").unwrap().pattern.is_none(),
        "default agent"
    );

    // A new manifest claiming a number the config gives to another agent is refused.
    let bad_routes = BTreeMap::from([("5000".to_string(), "somebody".to_string())]);
    let data2 = tempfile::tempdir().unwrap();
    let rt2 = Runtime::new(
        AgentsConfig {
            dir: dir.path().to_path_buf(),
            max_instances: 16,
            ..AgentsConfig::default()
        },
        BTreeMap::new(),
        data2.path(),
    )
    .unwrap();
    let registry2 = Registry::new(rt2, bad_routes).unwrap();
    dir.install("greeter", &v1, "name = \"greeter\"\nnumbers = [\"5000\"]\n");
    let err = registry2.reload("greeter").await.unwrap_err().to_string();
    assert!(
        err.contains("`somebody`") && err.contains("[routes]") && err.contains("greeter.toml"),
        "{err}"
    );
    assert!(registry2.resolve("5000").is_none());
}
