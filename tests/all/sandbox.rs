//! The sandbox holds: runaway and memory-hungry agents are stopped without harming other calls;
//! ungranted imports are refused at load; http only reaches allowed hosts; bad input gets one
//! clear error naming the file and the fix.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::agents::{AgentsDir, fixture, wat};
use switchboard::domain::{Action, FaultKind};
use switchboard::plugins::runtime::{AgentsConfig, Runtime};
use switchboard::plugins::{Registry, StartOutcome};

/// The probe's manifest, granting kv, one transfer target and http to `http_host`.
fn probe_manifest(http_host: &str) -> String {
    format!(
        "name = \"probe\"\n[capabilities]\nkv-quota-bytes = 64\n\
         transfer = [\"sip:allowed@127.0.0.1\"]\nhttp = [\"{http_host}\"]\n"
    )
}

fn runtime(
    dir: &AgentsDir,
    budget_ms: u64,
    max_instances: u32,
) -> (Arc<Runtime>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = AgentsConfig {
        dir: dir.path().to_path_buf(),
        max_instances,
        hook_budget_ms: budget_ms,
        ..AgentsConfig::default()
    };
    (
        Runtime::new(config, BTreeMap::new(), data.path()).unwrap(),
        data,
    )
}

async fn load_probe(
    http_host: &str,
    budget_ms: u64,
    max_instances: u32,
) -> (
    Arc<Runtime>,
    Arc<switchboard::plugins::AgentVersion>,
    AgentsDir,
    tempfile::TempDir,
) {
    let dir = AgentsDir::new();
    dir.install("probe", &fixture("probe"), &probe_manifest(http_host));
    let (rt, data) = runtime(&dir, budget_ms, max_instances);
    let v = rt
        .load(
            &dir.path().join("probe.wasm"),
            &dir.path().join("probe.toml"),
        )
        .await
        .unwrap();
    (rt, Arc::new(v), dir, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_agent_is_stopped_while_another_call_completes() {
    let budget = 200;
    let (rt, v, _dir, _data) = load_probe("api.example.com", budget, 64).await;
    let mut runaway = rt.session(&v, "runaway").await.unwrap();
    let mut healthy = rt.session(&v, "healthy").await.unwrap();
    let info = switchboard::plugins::runtime::test_call_info("c", "1", "2");
    runaway.start(&info).await.unwrap();
    healthy.start(&info).await.unwrap();

    let t0 = Instant::now();
    let spin = tokio::spawn(async move {
        let r = runaway.tool_call("spin", "").await;
        (r, t0.elapsed(), runaway)
    });
    // While the runaway spins, the other call's hooks keep completing.
    let mut healthy_calls = 0;
    while !spin.is_finished() {
        let actions = healthy.dtmf("5").await.unwrap();
        assert_eq!(actions, vec![Action::Say("digit 5".into())]);
        healthy_calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (result, elapsed, mut runaway) = spin.await.unwrap();
    let fault = result.unwrap_err();
    assert_eq!(fault.kind, FaultKind::CpuBudget, "{fault}");
    // The budget is the guest's CPU time: on a busy machine spending it takes longer.
    assert!(
        elapsed < Duration::from_millis(10 * budget),
        "stopped after {elapsed:?}"
    );
    assert!(
        healthy_calls > 3,
        "only {healthy_calls} healthy hooks ran meanwhile"
    );
    // The poisoned session refuses further hooks; the healthy one goes on.
    assert_eq!(
        runaway.dtmf("1").await.unwrap_err().kind,
        FaultKind::Poisoned
    );
    assert!(healthy.dtmf("6").await.is_ok());
    // The fallback for a failed agent is defined: apology then hang-up.
    assert_eq!(rt.fallback_actions().last(), Some(&Action::Hangup));
}

#[tokio::test]
async fn memory_bomb_is_capped() {
    let (rt, v, _dir, _data) = load_probe("api.example.com", 1000, 64).await;
    let info = switchboard::plugins::runtime::test_call_info("c", "1", "2");
    let mut small = rt.session(&v, "small").await.unwrap();
    small.start(&info).await.unwrap();
    let ok = small.tool_call("alloc", "8").await.unwrap();
    assert_eq!(ok.result.unwrap(), format!("allocated {}", 8 << 20));
    let mut bomb = rt.session(&v, "bomb").await.unwrap();
    bomb.start(&info).await.unwrap();
    let fault = bomb.tool_call("alloc", "100").await.unwrap_err();
    assert_eq!(fault.kind, FaultKind::Memory, "{fault}");
    // A fresh instance of the same version is unaffected.
    let mut next = rt.session(&v, "next").await.unwrap();
    assert!(matches!(
        next.start(&info).await.unwrap(),
        StartOutcome::Accept { .. }
    ));
}

#[tokio::test]
async fn a_call_never_sees_the_memory_of_the_call_before_it() {
    // One instance slot, so every call reuses the memory of the call before it. Slots reset
    // the pages a call wrote by copying up to a limit and release the rest: the second call
    // writes more than that limit.
    let (rt, v, _dir, _data) = load_probe("api.example.com", 1000, 1).await;
    let info = switchboard::plugins::runtime::test_call_info("c", "1", "2");
    let reason = switchboard::domain::EndReason::CallerHangup;
    for (call, allocate_mb) in [("first", "0"), ("second", "4"), ("third", "0")] {
        let mut session = rt.session(&v, call).await.unwrap();
        session.start(&info).await.unwrap();
        let found = session.tool_call("remember", call).await.unwrap().result;
        assert_eq!(found, Ok(String::new()), "{call} call found a note");
        let allocated = session
            .tool_call("alloc", allocate_mb)
            .await
            .unwrap()
            .result;
        assert!(allocated.is_ok(), "{allocated:?}");
        let found = session.tool_call("remember", "again").await.unwrap().result;
        assert_eq!(found, Ok(call.to_string()));
        session.end(&reason).await.unwrap();
    }
}

/// A one-request HTTP server on 127.0.0.1; returns its port.
fn one_shot_http(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[tokio::test]
async fn http_reaches_only_allowed_hosts() {
    let allowed = one_shot_http("pong");
    let other = one_shot_http("secret");
    let (rt, v, _dir, _data) = load_probe(&format!("127.0.0.1:{allowed}"), 1000, 64).await;
    let mut s = rt.session(&v, "http").await.unwrap();
    s.start(&switchboard::plugins::runtime::test_call_info(
        "c", "1", "2",
    ))
    .await
    .unwrap();
    let ok = s
        .tool_call("fetch", &format!("http://127.0.0.1:{allowed}/ping"))
        .await
        .unwrap();
    assert_eq!(ok.result.unwrap(), "200 pong");
    let denied = s
        .tool_call("fetch", &format!("http://127.0.0.1:{other}/"))
        .await
        .unwrap();
    let err = denied.result.unwrap_err();
    assert!(
        err.contains("NotAllowed") && err.contains("127.0.0.1"),
        "{err}"
    );
    let denied = s
        .tool_call("fetch", "http://localhost.example/")
        .await
        .unwrap();
    assert!(denied.result.unwrap_err().contains("NotAllowed"));
}

/// A granted name that resolves to loopback is not a way in: only the literal address, listed,
/// reaches a local service (a DNS name could be pointed there by whoever owns it).
#[tokio::test]
async fn a_granted_name_resolving_to_loopback_is_refused() {
    let port = one_shot_http("secret");
    let (rt, v, _dir, _data) = load_probe(&format!("localhost:{port}"), 1000, 64).await;
    let mut s = rt.session(&v, "http").await.unwrap();
    s.start(&switchboard::plugins::runtime::test_call_info(
        "c", "1", "2",
    ))
    .await
    .unwrap();
    let refused = s
        .tool_call("fetch", &format!("http://localhost:{port}/"))
        .await
        .unwrap();
    let err = refused.result.unwrap_err();
    assert!(
        err.contains("Unavailable") && err.contains("loopback"),
        "{err}"
    );
}

#[tokio::test]
async fn kv_quota_transfer_allowlist_and_effect_order() {
    let (rt, v, _dir, _data) = load_probe("api.example.com", 1000, 64).await;
    let mut s = rt.session(&v, "kv").await.unwrap();
    s.start(&switchboard::plugins::runtime::test_call_info(
        "c", "1", "2",
    ))
    .await
    .unwrap();
    assert_eq!(
        s.tool_call("kv-set", "small")
            .await
            .unwrap()
            .result
            .unwrap(),
        "ok"
    );
    let over = s
        .tool_call("kv-set", &"x".repeat(100))
        .await
        .unwrap()
        .result
        .unwrap_err();
    assert!(over.contains("quota"), "{over}");
    assert_eq!(
        s.tool_call("kv-get", "").await.unwrap().result.unwrap(),
        "small"
    );
    // Disallowed transfers are refused to the import and dropped from returned actions.
    let actions = s.dtmf("7").await.unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        matches!(&actions[0], Action::Say(t) if t.contains("NotAllowed")),
        "{actions:?}"
    );
    assert_eq!(
        s.dtmf("8").await.unwrap(),
        vec![Action::Transfer("sip:allowed@127.0.0.1".into())]
    );
    // Effects requested during a hook come before the returned actions.
    assert_eq!(
        s.dtmf("9").await.unwrap(),
        vec![
            Action::Say("effect first".into()),
            Action::Say("returned second".into()),
            Action::Hangup
        ]
    );
    // A rejection from on-start carries its SIP status.
    let mut r = rt.session(&v, "reject").await.unwrap();
    let out = r
        .start(&switchboard::plugins::runtime::test_call_info(
            "c", "1", "reject",
        ))
        .await
        .unwrap();
    assert!(
        matches!(out, StartOutcome::Reject(ref r) if r.code == 486),
        "{out:?}"
    );
}

/// Load one file into a registry; return the single error line.
async fn refusal(dir: &AgentsDir, name: &str, wasm: &[u8], manifest: &str) -> String {
    dir.write(&format!("{name}.toml"), manifest.as_bytes());
    dir.write(&format!("{name}.wasm"), wasm);
    let (rt, _data) = runtime(dir, 1000, 64);
    let registry = Registry::new(rt, BTreeMap::new()).unwrap();
    let err = registry.reload(name).await.unwrap_err().to_string();
    assert!(registry.snapshot().agents.is_empty());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[tokio::test]
async fn ungranted_imports_and_bad_files_are_refused_with_the_fix() {
    let dir = AgentsDir::new();
    let fs = refusal(
        &dir,
        "fs-agent",
        &std::fs::read(fixture("fs-agent")).unwrap(),
        "name = \"fs-agent\"",
    )
    .await;
    assert!(
        fs.contains("fs-agent.wasm") && fs.contains("wasi:filesystem") && fs.contains("kv"),
        "{fs}"
    );

    let sockets = wat(r#"(component
        (import "wasi:sockets/tcp@0.2.6" (instance))
        (instance $agent)
        (export "switchboard:agent/agent@0.1.0" (instance $agent)))"#);
    let err = refusal(&dir, "sock", &sockets, "name = \"sock\"").await;
    assert!(
        err.contains("sock.wasm")
            && err.contains("wasi:sockets/tcp")
            && err.contains("switchboard:agent/http"),
        "{err}"
    );

    let core = wat("(module)");
    let err = refusal(&dir, "core", &core, "name = \"core\"").await;
    assert!(
        err.contains("core.wasm")
            && err.contains("core WebAssembly module")
            && err.contains("wasm32-wasip2"),
        "{err}"
    );

    let future =
        wat(r#"(component (instance $a) (export "switchboard:agent/agent@0.3.0" (instance $a)))"#);
    let err = refusal(&dir, "future", &future, "name = \"future\"").await;
    assert!(
        err.contains("switchboard:agent@0.3.0") && err.contains("rebuild"),
        "{err}"
    );

    let err = refusal(&dir, "junk", b"\x00asm\x01\x00", "name = \"junk\"").await;
    assert!(
        err.contains("junk.wasm") && err.contains("not a WebAssembly component"),
        "{err}"
    );

    let probe = std::fs::read(fixture("probe")).unwrap();
    let err = refusal(&dir, "probe", &probe, "name = \"probe\"\nnumbrs = [\"1\"]").await;
    assert!(
        err.contains("probe.toml") && err.contains("numbrs"),
        "{err}"
    );
    let err = refusal(
        &dir,
        "probe",
        &probe,
        "name = \"probe\"\nnumbers = [\"12a!\"]",
    )
    .await;
    assert!(
        err.contains("probe.toml") && err.contains("bad number `12a!`"),
        "{err}"
    );
    // The probe imports kv and http; without grants it is refused, naming the capability.
    let err = refusal(&dir, "probe", &probe, "name = \"probe\"").await;
    assert!(err.contains("kv-quota-bytes"), "{err}");
    let err = refusal(
        &dir,
        "probe",
        &probe,
        "name = \"probe\"\n[capabilities]\nkv-quota-bytes = 10",
    )
    .await;
    assert!(err.contains("http = ["), "{err}");
}

#[tokio::test]
async fn missing_agents_folder_is_one_clear_error() {
    let dir = AgentsDir::new();
    let missing = dir.path().join("not-there");
    let data = tempfile::tempdir().unwrap();
    let config = AgentsConfig {
        dir: missing.clone(),
        max_instances: 8,
        ..AgentsConfig::default()
    };
    let rt = Runtime::new(config, BTreeMap::new(), data.path()).unwrap();
    let registry = Registry::new(rt, BTreeMap::new()).unwrap();
    let errors = registry.load_all().await;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("not-there") && text.contains("[agents] dir"),
        "{text}"
    );
}
