//! The service's rules without agents loaded: the ETag precondition, environment-set values,
//! and changes the start-up rules refuse, each leaving the effective configuration as it was;
//! registration accounts with their write-only password.

use std::sync::Arc;

use super::*;
use crate::plugins::{AgentsConfig, Runtime};
use crate::store::{SqliteStore, StoreConfig};

async fn live(dir: &std::path::Path, env: &[(&str, &str)]) -> Arc<LiveConfig> {
    let text = "[routes]\n\"1000\" = \"menu\"\n[agents]\ndefault = \"menu\"\n\
                [agent.menu.config]\naddress = \"Main St 1\"\n\
                [[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:5080\"\n";
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::parse(text, "test.toml", env).unwrap();
    let runtime = Runtime::new(AgentsConfig::default(), config.agent.clone(), dir).unwrap();
    let registry = Registry::new(runtime, config.routes.clone()).unwrap();
    let store = SqliteStore::open(&StoreConfig {
        path: dir.join("calls.db"),
        ..StoreConfig::default()
    })
    .unwrap();
    LiveConfig::start(&config, Arc::new(store), registry)
        .await
        .unwrap()
}

fn route(pattern: &str, agent: &str) -> Change {
    Change {
        target: Target::Route(overlay::canonical_pattern(pattern).unwrap()),
        value: Some(agent.into()),
    }
}

#[tokio::test]
async fn refused_changes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SWITCHBOARD__ROUTES__2000", "menu")];
    let live = live(dir.path(), &env).await;
    let (body, etag) = live.effective().await;
    assert_eq!(body["routes"]["1000"]["source"], "file");
    assert_eq!(body["routes"]["2000"]["source"], "environment");
    assert_eq!(
        body["agents"]["menu"]["settings"]["address"]["value"],
        "Main St 1"
    );

    let err = live.change("t", None, route("1000", "menu")).await;
    assert!(
        matches!(err, Err(LiveError::PreconditionRequired)),
        "{err:?}"
    );
    let err = live
        .change("t", Some("\"old\""), route("1000", "menu"))
        .await;
    assert!(matches!(err, Err(LiveError::Stale { .. })), "{err:?}");
    let err = live.change("t", Some(&etag), route("2000", "x")).await;
    match err {
        Err(LiveError::FromEnvironment { variable, .. }) => {
            assert_eq!(variable, "SWITCHBOARD__ROUTES__2000")
        }
        other => panic!("{other:?}"),
    }
    // No agent is loaded here: every agent named is unknown.
    let err = live.change("t", Some(&etag), route("1000", "nobody")).await;
    assert!(
        matches!(
            err,
            Err(LiveError::Invalid {
                field: "agent",
                code: "unknown_agent",
                ..
            })
        ),
        "{err:?}"
    );
    let setting = Change {
        target: Target::Setting {
            agent: "menu".into(),
            key: "address".into(),
        },
        value: Some("x".into()),
    };
    let err = live.change("t", Some(&etag), setting).await;
    assert!(
        matches!(err, Err(LiveError::Invalid { field: "name", .. })),
        "{err:?}"
    );
    let missing = Change {
        target: Target::Route("3000".into()),
        value: None,
    };
    let err = live.change("t", Some(&etag), missing).await;
    assert!(matches!(err, Err(LiveError::NotFound(_))), "{err:?}");

    assert_eq!(live.effective().await, (body, etag));
    assert!(live.audit(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn deleting_a_file_route_is_audited_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = live(dir.path(), &[]).await;
    let mut changes = first.subscribe();
    let (_, etag) = first.effective().await;
    let delete = Change {
        target: Target::Route("1000".into()),
        value: None,
    };
    let record = first.change("ops", Some(&etag), delete).await.unwrap();
    assert_eq!(record.target, "routes/1000");
    assert_eq!(record.before, json!("menu"));
    assert_eq!(record.after, Value::Null);
    assert_eq!(changes.recv().await.unwrap(), record);
    let (after, new_etag) = first.effective().await;
    assert_ne!(new_etag, etag);
    assert!(after["routes"].get("1000").is_none());
    assert!(
        first
            .registry
            .snapshot()
            .routes
            .resolve("1000")
            .unwrap()
            .pattern
            .is_none()
    );
    drop(first);

    // The same data folder again: the tombstone still hides the file's route.
    let again = live(dir.path(), &[]).await;
    assert_eq!(again.effective().await.0, after);
    assert_eq!(again.audit(10).await.unwrap()[0].who, "ops");
}

fn account(name: &str, body: Value) -> Change {
    Change {
        target: Target::Account(name.into()),
        value: Some(body.to_string()),
    }
}

#[tokio::test]
async fn an_account_keeps_its_password_and_refusals_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), &[]).await;
    let accounts = live.accounts();
    let (_, etag) = live.effective().await;
    let body = json!({"registrar": "127.0.0.1:5090", "aor": "sip:agent@127.0.0.1",
                      "password": "first-secret", "expires": 60});
    let record = live
        .change("ops", Some(&etag), account("pbx", body))
        .await
        .unwrap();
    assert_eq!(record.target, "accounts/pbx");
    assert_eq!(record.after["password"], "***");
    assert!(!record.after.to_string().contains("first-secret"));
    assert_eq!(
        accounts.borrow()[0].password.as_deref(),
        Some("first-secret")
    );

    // A PUT without the password keeps it.
    let (body, etag) = live.effective().await;
    assert_eq!(body["accounts"]["pbx"]["value"]["password"], "***");
    assert_eq!(body["accounts"]["pbx"]["source"], "live");
    assert!(!body.to_string().contains("first-secret"));
    let changed =
        json!({"registrar": "127.0.0.1:5090", "aor": "sip:agent@127.0.0.1", "expires": 120});
    live.change("ops", Some(&etag), account("pbx", changed))
        .await
        .unwrap();
    assert_eq!(accounts.borrow()[0].expires, 120);
    assert_eq!(
        accounts.borrow()[0].password.as_deref(),
        Some("first-secret")
    );

    let (body, etag) = live.effective().await;
    for (name, bad, field) in [
        (
            "pbx",
            json!({"registrar": "pbx.example.com", "aor": "sip:a@b"}),
            "registrar",
        ),
        (
            "pbx",
            json!({"registrar": "127.0.0.1:5090", "aor": "agent"}),
            "aor",
        ),
        ("pbx", json!({"registrar": "127.0.0.1:5090"}), "aor"),
        (
            "pbx",
            json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@b", "expires": "x"}),
            "expires",
        ),
        (
            "carrier",
            json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@b"}),
            "name",
        ),
    ] {
        let err = live
            .change("ops", Some(&etag), account(name, bad.clone()))
            .await;
        match err {
            Err(LiveError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(live.effective().await, (body, etag.clone()));

    let delete = Change {
        target: Target::Account("pbx".into()),
        value: None,
    };
    live.change("ops", Some(&etag), delete).await.unwrap();
    assert!(accounts.borrow().is_empty());
    assert!(
        live.effective().await.0["accounts"]
            .as_object()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_stored_account_that_no_longer_fits_leaves_the_files_accounts() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Stored live before the file's trunk took the name.
        let store = SqliteStore::open(&StoreConfig {
            path: dir.path().join("calls.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let value = json!({"name": "carrier", "registrar": "127.0.0.1:5090",
                           "aor": "sip:agent@127.0.0.1"});
        store
            .record_config_change(ConfigChange {
                entry: OverlayEntry {
                    kind: crate::store::OverlayKind::Account,
                    agent: String::new(),
                    key: "carrier".into(),
                    value: Some(value.to_string()),
                    at_ms: 1,
                },
                forget: false,
                who: "ops".into(),
                action: "set".into(),
                target: "accounts/carrier".into(),
                before: Value::Null,
                after: value,
            })
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    let live = live(dir.path(), &[]).await;
    assert!(live.accounts().borrow().is_empty());
}
