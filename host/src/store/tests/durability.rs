//! Durability: a killed process loses nothing acknowledged; a reopened store keeps its data and
//! a newer schema is refused.

use super::*;

/// The child's SQLite file, and its Postgres database when the test runs on Postgres.
const CRASH_ENV: &str = "SWITCHBOARD_STORE_CRASH_TEST_DB";
const CRASH_URL_ENV: &str = "SWITCHBOARD_STORE_CRASH_TEST_URL";
const CRASH_EVENTS: u64 = 200;

/// Runs only as the child of `killed_process_loses_nothing_written`: writes, then aborts the
/// process (no destructors, no clean close), like a crash or kill -9.
#[test]
#[ignore = "child process of killed_process_loses_nothing_written"]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = StoreConfig {
            url: std::env::var(CRASH_URL_ENV).ok().map(Secret::new),
            path: path.into(),
            ..StoreConfig::default()
        };
        let store = open(&cfg).await.unwrap();
        store
            .create_call(new_call("done", "1", "2", "menu", T0))
            .await
            .unwrap();
        store.end_call("done", ended(T0 + 5)).await.unwrap();
        store
            .create_call(new_call("live", "1", "2", "menu", T0 + 10))
            .await
            .unwrap();
        for i in 0..CRASH_EVENTS {
            store
                .append_event("live", T0 + 100 + i as i64, "tick", json!(i))
                .await
                .unwrap();
        }
        store
            .append_transcript("live", T0 + 1000, Role::Caller, "last words")
            .await
            .unwrap();
        println!("WRITTEN");
    });
    std::process::abort();
}

async fn killed_process_loses_nothing_written(db: Db) {
    let cfg = db.config();
    let test_path = module_path!().split_once("::").unwrap().1;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    if let Some(url) = &db.url {
        child.env(CRASH_URL_ENV, url);
    }
    let mut child = child
        .args([
            "--exact",
            &format!("{test_path}::crash_child"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &cfg.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("child finishes")
        .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stdout), &mut out)
        .await
        .unwrap();
    assert!(out.contains("WRITTEN"), "child output: {out}");
    assert!(!status.success(), "the child must have aborted");

    let store = db.open().await;
    let live = store.get_call("live").await.unwrap();
    assert_eq!(live.call.state, CallState::Active);
    assert_eq!(live.events.len() as u64, CRASH_EVENTS);
    assert!(
        live.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.data == json!(i))
    );
    assert_eq!(live.transcript[0].text, "last words");
    assert_eq!(store.close_abandoned_calls(NODE).await.unwrap(), 1);
    let live = store.get_call("live").await.unwrap().call;
    assert_eq!(live.state, CallState::EndedAbnormally);
    assert_eq!(live.end_reason.as_deref(), Some("host restarted"));
    assert_eq!(live.ended_at_ms, Some(T0 + 1000));
    let done = store.get_call("done").await.unwrap().call;
    assert_eq!(
        (done.state, done.ended_at_ms),
        (CallState::Ended, Some(T0 + 5))
    );
    assert_eq!(store.close_abandoned_calls(NODE).await.unwrap(), 0);
}

async fn reopen_keeps_data_and_refuses_a_newer_schema(db: Db) {
    {
        let store = db.open().await;
        store
            .create_call(new_call("kept", "1", "2", "menu", T0))
            .await
            .unwrap();
        store
            .append_event("kept", T0 + 7, "k", json!(1))
            .await
            .unwrap();
        store
            .append_transcript("kept", T0 + 3, Role::Agent, "hi")
            .await
            .unwrap();
        // Dropped without ending the call or shutting down.
    }
    let store = db.open().await;
    assert_eq!(store.close_abandoned_calls(NODE).await.unwrap(), 1);
    let kept = store.get_call("kept").await.unwrap().call;
    assert_eq!(
        (kept.state, kept.ended_at_ms),
        (CallState::EndedAbnormally, Some(T0 + 7))
    );
    // Numbering continues where the previous run stopped.
    assert_eq!(
        store
            .append_event("kept", T0 + 9, "late", json!(2))
            .await
            .unwrap(),
        3
    );
    store.shutdown().await.unwrap();

    db.add_schema_version(schema::latest() + 1);
    assert!(matches!(
        open(&db.config()).await,
        Err(StoreError::SchemaTooNew { .. })
    ));
}

on_both!(
    killed_process_loses_nothing_written,
    reopen_keeps_data_and_refuses_a_newer_schema,
);
