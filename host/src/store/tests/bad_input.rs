//! What the store refuses or cannot open, and the keys it derives from numbers and config.

use super::*;

async fn bad_input_gets_clear_errors(db: Db) {
    let store = db.open().await;
    let nf = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound { call_id }) if call_id == "nope");
    assert!(nf(store.set_answered("nope", 1).await));
    assert!(nf(store
        .append_event("nope", 1, "x", json!(null))
        .await
        .map(|_| ())));
    assert!(nf(store
        .append_transcript("nope", 1, Role::Agent, "hi")
        .await
        .map(|_| ())));
    assert!(nf(store.add_usage(usage("nope", 1, 1, 1)).await));
    assert!(nf(store.set_recording("nope", "/x").await));
    assert!(nf(store.end_call("nope", ended(1)).await));
    assert!(nf(store.get_call("nope").await.map(|_| ())));
    let latency = TurnLatency {
        call_id: "nope".into(),
        turn: 0,
        host_in_ms: 0.0,
        model_ms: 0.0,
        host_out_ms: 0.0,
        total_ms: 0.0,
        stages: None,
    };
    assert!(nf(store.record_latency(latency).await));

    store
        .create_call(new_call("c", "1", "2", "a", T0))
        .await
        .unwrap();
    assert!(matches!(
        store.create_call(new_call("c", "1", "2", "a", T0)).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_call(new_call("", "1", "2", "a", T0)).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.add_usage(usage("c", 1, u64::MAX, 1)).await,
        Err(StoreError::InvalidInput(_))
    ));
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        let mut report = usage("c", 1, 1, 1);
        report.items[1].amount = bad;
        assert!(
            matches!(
                store.add_usage(report).await,
                Err(StoreError::InvalidInput(_))
            ),
            "amount {bad} accepted"
        );
    }
    let mut unnamed = usage("c", 1, 1, 1);
    unnamed.items[0].unit = String::new();
    assert!(matches!(
        store.add_usage(unnamed).await,
        Err(StoreError::InvalidInput(_))
    ));
    store.end_call("c", ended(T0 + 1)).await.unwrap();
    assert!(matches!(
        store.end_call("c", ended(T0 + 2)).await,
        Err(StoreError::AlreadyEnded { .. })
    ));
    let bad_cursor = CallFilter {
        cursor: Some("not-a-cursor".into()),
        ..CallFilter::default()
    };
    assert!(matches!(
        store.list_calls(&bad_cursor).await,
        Err(StoreError::InvalidCursor(_))
    ));
    // A refused write in a batch does not disturb the others, nor the totals.
    let c = store.get_call("c").await.unwrap().call;
    assert_eq!((c.input_tokens, c.ended_at_ms), (0, Some(T0 + 1)));
}

#[test]
fn unusable_path_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&config_at(&file.join("calls.db")))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    // A file that is not a database.
    std::fs::write(&file, "this is not a database\n".repeat(200)).unwrap();
    let err = SqliteStore::open(&config_at(&file)).err().unwrap();
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[tokio::test]
async fn a_bad_or_unreachable_postgres_url_is_an_open_error_naming_the_address() {
    let with_url = |url: &str| StoreConfig {
        url: Some(Secret::new(url)),
        connect_timeout_seconds: 2,
        ..StoreConfig::default()
    };
    let err = open(&with_url("postgres://sb:s3cret@["))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://sb:s3cret@127.0.0.1:{port}/calls");
    let err = open(&with_url(&url)).await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(
        text.contains(&format!("postgres://sb@127.0.0.1:{port}/calls")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let err = open(&with_url(&format!("{url}?sslmode=require")))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[test]
fn number_keys() {
    let cases = [
        ("+1 (555) 010-0001", "15550100001"),
        ("sip:+15550100001@pbx.example;user=phone", "15550100001"),
        ("\"Desk\" <sips:1000@10.0.0.1:5061>", "1000"),
        ("tel:+49.30.123;phone-context=+49", "4930123"),
        ("sip:%2B4930123@host", "4930123"),
        ("SIP:Sales@pbx", "sales"),
        ("anonymous", "anonymous"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(number_key(input), want, "{input:?}");
    }
}

#[test]
fn config_keys_are_kebab_case_and_checked() {
    let cfg: StoreConfig = toml::from_str(
        "path = \"/var/lib/sb/calls.db\"\nretention-days = 30\nread-connections = 2",
    )
    .unwrap();
    assert_eq!(cfg.path, Path::new("/var/lib/sb/calls.db"));
    assert_eq!((cfg.retention_days, cfg.read_connections), (30, 2));
    assert_eq!(cfg.purge_interval_minutes, 60);
    let defaults: StoreConfig = toml::from_str("").unwrap();
    assert_eq!(defaults, StoreConfig::default());
    assert_eq!(defaults.path, Path::new(".switchboard/calls.db"));
    assert_eq!(defaults.retention_days, 90);
    let pg: StoreConfig = toml::from_str("url = \"postgres://sb:pw@127.0.0.1/calls\"").unwrap();
    let url = pg.url.as_ref().map(Secret::expose);
    assert_eq!(url, Some("postgres://sb:pw@127.0.0.1/calls"));
    assert_eq!(format!("{:?}", pg.url), "Some(***)");
    let err = toml::from_str::<StoreConfig>("retention_days = 3").unwrap_err();
    assert!(err.to_string().contains("retention_days"), "{err}");
}

on_both!(bad_input_gets_clear_errors,);
