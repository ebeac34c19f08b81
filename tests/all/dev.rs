//! `switchboard dev`: editing an agent crate rebuilds it with cargo and the new version goes
//! live; a build that fails keeps the running version.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::agents::{AgentsDir, guest_target, repo_root};
use switchboard::plugins::runtime::{AgentsConfig, Runtime, test_call_info};
use switchboard::plugins::{AgentEventKind, Registry, StartOutcome, deploy, watcher};

async fn greeting(registry: &Registry) -> String {
    let agent = registry.resolve("4000").expect("greeter routed").agent;
    let mut s = registry.runtime().session(&agent, "dev").await.unwrap();
    match s.start(&test_call_info("c", "1", "4000")).await.unwrap() {
        StartOutcome::Accept { config, .. } => config.greeting.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Writes the greeter fixture as crate and agent `dev-greeter`, answering "hello from v{build}"
/// into `dir`. It builds like the test fixtures: their profile and lock, and (by a cargo config
/// beside it) their shared target folder, so only the crate itself compiles.
fn write_crate(dir: &Path, build: &str) {
    let root = repo_root();
    let fixtures = std::fs::read_to_string(root.join("tests/fixtures/Cargo.toml")).unwrap();
    let profile = &fixtures[fixtures
        .find("[profile.release]")
        .expect("fixtures' profile")..];
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"dev-greeter\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nswitchboard-sdk = {{ path = {:?} }}\n\n\
             [workspace]\n\n{profile}",
            root.join("guest-sdk").display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(
        root.join("tests/fixtures/Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    let config = dir.parent().unwrap().join(".cargo");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!(
            "[build]\ntarget-dir = {:?}\n",
            guest_target().display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        "name = \"dev-greeter\"\nnumbers = [\"4000\"]\n",
    )
    .unwrap();
    let source = std::fs::read_to_string(root.join("tests/fixtures/greeter/src/lib.rs"))
        .unwrap()
        .replace("None => \"1\"", &format!("None => \"{build}\""));
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_rebuilds_on_source_change_and_keeps_the_old_version_on_errors() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("dev-greeter");
    write_crate(&crate_dir, "one");
    let agents = AgentsDir::new();
    let data = tempfile::tempdir().unwrap();
    let config = AgentsConfig {
        dir: agents.path().to_path_buf(),
        max_instances: 16,
        ..AgentsConfig::default()
    };
    let rt = Runtime::new(config, BTreeMap::new(), data.path()).unwrap();
    let registry = Registry::new(rt, BTreeMap::new()).unwrap();
    let mut events = registry.subscribe();
    let _watch = watcher::watch(registry.clone());

    assert_eq!(
        deploy::rebuild(&crate_dir, agents.path()).await.as_deref(),
        Some("dev-greeter")
    );
    let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    assert_eq!(greeting(&registry).await, "hello from vone");

    let _dev = deploy::watch_crate(crate_dir.clone(), agents.path().to_path_buf()).unwrap();
    write_crate(&crate_dir, "two");
    let ev = tokio::time::timeout(Duration::from_secs(240), events.recv())
        .await
        .expect("rebuilt in time")
        .unwrap();
    assert!(matches!(ev.kind, AgentEventKind::Loaded { .. }), "{ev:?}");
    assert_eq!(greeting(&registry).await, "hello from vtwo");

    // A syntax error: cargo fails, nothing is installed, v"two" keeps answering.
    std::fs::write(crate_dir.join("src/lib.rs"), "this is not rust").unwrap();
    assert!(deploy::build(&crate_dir).is_err());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(events.try_recv().is_err(), "no reload after a failed build");
    assert_eq!(greeting(&registry).await, "hello from vtwo");
}
