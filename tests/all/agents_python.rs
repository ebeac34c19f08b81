//! Python agents: the example twin of the receptionist, built as `switchboard deploy` builds it
//! (componentize-py with the helper library), behaves as the Rust one; a Python agent cannot
//! reach files, sockets or the environment, and `sys.exit()` is a fault, not an exit.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agents::receptionist_script;
use crate::support::agents::{AgentsDir, example_agent, interpreted_agent, repo_root};
use crate::support::host::shared_cache_config;
use switchboard::domain::{Action, EndReason, FaultKind};
use switchboard::plugins::harness::Harness;
use switchboard::plugins::runtime::{AgentsConfig, Runtime, test_call_info};
use switchboard::plugins::{AgentEvent, AgentEventKind, Registry, StartOutcome, deploy, watcher};
use tokio::sync::broadcast;

/// Load a Python agent's component with its manifest, compiled through the tests' shared cache.
async fn load_python(wasm: &Path, manifest: &Path) -> Harness {
    Harness::load_with(wasm, manifest, shared_cache_config(), BTreeMap::new())
        .await
        .expect("the Python agent loads")
}

#[tokio::test]
async fn agents_python_receptionist_twin_acts_as_the_rust_one() {
    let dir = repo_root().join("plugins/receptionist-py");
    let h = load_python(&example_agent("receptionist-py"), &dir.join("agent.toml")).await;
    assert_eq!(h.version().info.name, "receptionist-py");
    assert_eq!(h.version().info.numbers, vec!["2001"]);
    receptionist_script(&h, "2001").await;
}

#[tokio::test]
async fn agents_python_sandbox_refuses_files_sockets_and_exit() {
    let dir = repo_root().join("tests/fixtures/sandbox-py");
    let h = load_python(&interpreted_agent(&dir), &dir.join("agent.toml")).await;
    let mut call = h.call("+15550100009", "2001").await.unwrap();
    call.start().await.unwrap();

    let read = call
        .tool_call("read_file", r#"{"path":"/etc/passwd"}"#)
        .await
        .unwrap();
    let read = read.result.unwrap();
    assert!(read.starts_with("failed: "), "{read}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = call
        .tool_call(
            "connect",
            &format!(r#"{{"host":"127.0.0.1","port":{port}}}"#),
        )
        .await
        .unwrap();
    let connect = connect.result.unwrap();
    assert!(connect.starts_with("failed: "), "{connect}");
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "the agent reached the listener"
    );

    let env = call.tool_call("environment", "{}").await.unwrap();
    let env: serde_json::Value = serde_json::from_str(&env.result.unwrap()).unwrap();
    assert_eq!(env["environ"], serde_json::json!({}), "{env}");

    // The call went on: the agent still answers.
    assert_eq!(
        call.dtmf("1").await.unwrap(),
        vec![Action::Say("still here after 1".into())]
    );
    eprintln!("sandbox-py: open -> {read}; connect -> {connect}");

    // sys.exit() is not a way out of the sandbox: the hook faults and the host's fallback runs.
    // (The budget is the hook's time in the guest: on a loaded machine the interpreter's exit
    // path can run past it before it traps.)
    let fault = call.dtmf("9").await.unwrap_err();
    assert!(
        matches!(fault.kind, FaultKind::Trap | FaultKind::CpuBudget),
        "{fault:?}"
    );
    let after = call.dtmf("1").await.unwrap_err();
    assert_eq!(after.kind, FaultKind::Poisoned, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_python_hot_reload_keeps_running_calls_on_the_old_version() {
    // The author's folder: a copy of the example, edited below as an author would.
    let author = tempfile::tempdir().unwrap();
    let example = repo_root().join("plugins/receptionist-py");
    for file in ["app.py", "agent.toml"] {
        std::fs::copy(example.join(file), author.path().join(file)).unwrap();
    }
    let agents = AgentsDir::new();
    let config = AgentsConfig {
        dir: agents.path().to_path_buf(),
        ..shared_cache_config()
    };
    let built = Instant::now();
    deploy::deploy(author.path(), agents.path()).expect("v1 deploys");
    eprintln!(
        "receptionist-py: v1 built and installed in {:?}",
        built.elapsed()
    );
    let data = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config, BTreeMap::new(), data.path()).unwrap();
    let registry = Registry::new(rt.clone(), BTreeMap::new()).unwrap();
    let mut events = registry.subscribe();
    let _watch = watcher::watch(registry.clone());
    let ev = next_event(&mut events).await;
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    let v1 = registry
        .resolve("2001")
        .expect("route to receptionist-py")
        .agent;
    let mut old = rt.session(&v1, "on-v1").await.unwrap();
    let start = old
        .start(&test_call_info("c", "+15550100009", "2001"))
        .await;
    assert!(greeting(&start.unwrap()).starts_with("Thank you for calling"));

    // Edit only the script: a new greeting.
    let app = author.path().join("app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, text.replace("Thank you for calling", "Welcome to")).unwrap();
    let built = Instant::now();
    let wasm = deploy::build(author.path()).expect("v2 builds");
    let build_time = built.elapsed();
    let published = Instant::now();
    deploy::install(author.path(), &wasm, agents.path()).unwrap();
    let ev = next_event(&mut events).await;
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    eprintln!(
        "receptionist-py: v2 built in {build_time:?}, live {:?} after install",
        published.elapsed()
    );

    let v2 = registry.resolve("2001").unwrap().agent;
    assert_ne!(v2.hash, v1.hash);
    let mut new = rt.session(&v2, "on-v2").await.unwrap();
    let start = new
        .start(&test_call_info("c", "+15550100009", "2001"))
        .await;
    assert!(greeting(&start.unwrap()).starts_with("Welcome to"));

    // The call that started on v1 runs on v1 to its end.
    let hours = old.tool_call("opening_hours", "{}").await.unwrap();
    assert!(hours.result.unwrap().contains("Monday to Friday"));
    assert_eq!(old.version().hash, v1.hash);
    old.end(&EndReason::CallerHangup).await.unwrap();
    new.end(&EndReason::CallerHangup).await.unwrap();
}

/// The next reload event; a debug host compiling an interpreter's new functions is slow.
async fn next_event(rx: &mut broadcast::Receiver<AgentEvent>) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(300), rx.recv())
        .await
        .expect("a reload event within 300 s")
        .expect("event channel open")
}

fn greeting(outcome: &StartOutcome) -> String {
    match outcome {
        StartOutcome::Accept { config, .. } => config.greeting.clone().unwrap_or_default(),
        StartOutcome::Reject(r) => panic!("rejected: {r:?}"),
    }
}
