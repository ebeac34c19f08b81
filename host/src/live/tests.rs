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
    let provider = config.model.build().unwrap();
    LiveConfig::start(&config, Arc::new(store), registry, provider)
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
                write: OverlayWrite::One {
                    entry: OverlayEntry {
                        kind: crate::store::OverlayKind::Account,
                        agent: String::new(),
                        key: "carrier".into(),
                        value: Some(value.to_string()),
                        at_ms: 1,
                    },
                    forget: false,
                },
                at_ms: 1,
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

fn trunk(name: &str, body: Value) -> Change {
    Change {
        target: Target::Trunk(name.into()),
        value: Some(body.to_string()),
    }
}

#[tokio::test]
async fn a_trunk_keeps_its_password_and_refusals_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), &[]).await;
    let trunks = live.trunks();
    assert_eq!(trunks.borrow()[0].name, "carrier");
    let (body, etag) = live.effective().await;
    assert_eq!(body["trunks"]["carrier"]["source"], "file");

    let added = json!({"outbound-proxy": "127.0.0.1:5090", "password": "trunk-secret",
                       "inbound": {"digest": {"realm": "r", "user": "u", "password": "in-secret"}}});
    let record = live
        .change("ops", Some(&etag), trunk("pbx", added))
        .await
        .unwrap();
    assert_eq!(record.target, "trunks/pbx");
    assert_eq!(record.after["password"], "***");
    assert_eq!(record.after["inbound"]["digest"]["password"], "***");
    assert!(
        !record.after.to_string().contains("-secret"),
        "{}",
        record.after
    );
    let pbx = trunks
        .borrow()
        .iter()
        .find(|t| t.name == "pbx")
        .cloned()
        .unwrap();
    assert_eq!(pbx.password.as_deref(), Some("trunk-secret"));

    // Passwords left out (or given as ***) are kept.
    let (body, etag) = live.effective().await;
    assert!(!body.to_string().contains("-secret"), "{body}");
    let changed = json!({"outbound-proxy": "127.0.0.1:5091", "password": "***",
                         "inbound": {"digest": {"realm": "r", "user": "u"}}});
    live.change("ops", Some(&etag), trunk("pbx", changed))
        .await
        .unwrap();
    let pbx = trunks
        .borrow()
        .iter()
        .find(|t| t.name == "pbx")
        .cloned()
        .unwrap();
    assert_eq!(pbx.outbound_proxy.port(), 5091);
    assert_eq!(pbx.password.as_deref(), Some("trunk-secret"));
    assert_eq!(
        pbx.inbound.digest.map(|d| d.password).as_deref(),
        Some("in-secret")
    );

    let (body, etag) = live.effective().await;
    for (name, bad, field) in [
        ("new", json!({"domain": "example.com"}), "outbound-proxy"),
        (
            "new",
            json!({"outbound-proxy": "pbx.example.com"}),
            "outbound-proxy",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5090", "domain": "bad domain"}),
            "domain",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5090", "password": "***"}),
            "password",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5090", "inbound-sources": ["nowhere"]}),
            "inbound-sources",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5090", "inbound": {"digest": {"realm": "r"}}}),
            "inbound",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5090", "tls-server-name": "x"}),
            "tls-server-name",
        ),
        (
            "new",
            json!({"outbound-proxy": "127.0.0.1:5061", "transport": "tls",
                   "tls-client-cert": "/nonexistent/c.pem", "tls-client-key": "/nonexistent/k.pem"}),
            "tls-client-cert",
        ),
    ] {
        let err = live
            .change("ops", Some(&etag), trunk(name, bad.clone()))
            .await;
        match err {
            Err(LiveError::Invalid {
                field: f,
                code: "bad_trunk",
                ..
            }) => assert_eq!(f, field, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // A second default, and an account's name.
    let default = json!({"outbound-proxy": "127.0.0.1:5090", "default": true});
    live.change("ops", Some(&etag), trunk("pbx", default.clone()))
        .await
        .unwrap();
    let (_, etag2) = live.effective().await;
    let err = live
        .change("ops", Some(&etag2), trunk("new", default))
        .await;
    assert!(
        matches!(
            err,
            Err(LiveError::Invalid {
                field: "default",
                ..
            })
        ),
        "{err:?}"
    );
    let account_body = json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@127.0.0.1"});
    live.change("ops", Some(&etag2), account("ext", account_body))
        .await
        .unwrap();
    let (body2, etag3) = live.effective().await;
    let err = live
        .change(
            "ops",
            Some(&etag3),
            trunk("ext", json!({"outbound-proxy": "127.0.0.1:1"})),
        )
        .await;
    assert!(
        matches!(
            err,
            Err(LiveError::Invalid {
                field: "name",
                code: "bad_trunk",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(live.effective().await, (body2, etag3.clone()));
    assert_ne!(body, live.effective().await.0);

    // Removing the file's trunk leaves a tombstone; new lookups no longer find it.
    let delete = Change {
        target: Target::Trunk("carrier".into()),
        value: None,
    };
    live.change("ops", Some(&etag3), delete).await.unwrap();
    assert!(!trunks.borrow().iter().any(|t| t.name == "carrier"));
    assert!(live.effective().await.0["trunks"].get("carrier").is_none());
}

#[tokio::test]
async fn an_import_of_an_export_gives_the_configuration_back_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), &[]).await;
    let (_, etag) = live.effective().await;
    let body = json!({"outbound-proxy": "127.0.0.1:5090", "password": "trunk-secret"});
    live.change("ops", Some(&etag), trunk("pbx", body))
        .await
        .unwrap();
    let (_, etag) = live.effective().await;
    let delete = Change {
        target: Target::Trunk("carrier".into()),
        value: None,
    };
    live.change("ops", Some(&etag), delete).await.unwrap();
    let (exported, etag) = live.export().await;
    let (saved, saved_etag) = live.effective().await;
    assert_eq!(etag, saved_etag);
    assert_eq!(exported.removed, ["trunks/carrier"]);
    assert_eq!(exported.trunks["pbx"]["password"], "***");

    // Changed after the export: a new account, the trunk moved.
    let body = json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@127.0.0.1"});
    live.change("ops", Some(&etag), account("ext", body))
        .await
        .unwrap();
    let (_, etag) = live.effective().await;
    let moved = json!({"outbound-proxy": "127.0.0.1:6000"});
    live.change("ops", Some(&etag), trunk("pbx", moved))
        .await
        .unwrap();
    let (changed, etag) = live.effective().await;
    assert_ne!(changed, saved);

    // A bad document: refused as a whole, naming the field; nothing changes.
    let mut bad = exported.clone();
    bad.trunks
        .insert("other".into(), json!({"outbound-proxy": "nowhere"}));
    let err = live.import("ops", Some(&etag), &bad).await;
    assert!(
        matches!(
            err,
            Err(LiveError::Invalid {
                field: "outbound-proxy",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(live.effective().await, (changed, etag.clone()));

    // The export imported: the configuration at the export, the password kept.
    let record = live.import("ops", Some(&etag), &exported).await.unwrap();
    assert_eq!(record.action, "import");
    assert_eq!(record.target, "live");
    assert!(!record.after.to_string().contains("trunk-secret"));
    assert_eq!(live.effective().await, (saved, saved_etag));
    let trunks = live.trunks().borrow().clone();
    assert_eq!(trunks.len(), 1);
    assert_eq!(trunks[0].password.as_deref(), Some("trunk-secret"));
    assert!(live.accounts().borrow().is_empty());
    assert_eq!(live.export().await.0, exported);
}

fn model(key: &str, value: Option<&str>) -> Change {
    Change {
        target: Target::Model(key.into()),
        value: value.map(str::to_string),
    }
}

#[tokio::test]
async fn model_keys_build_the_provider_of_new_calls_and_refusals_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let live = live(dir.path(), &[]).await;
    let provider = live.provider();
    assert_eq!(provider.borrow().name(), "offline");
    let (body, etag) = live.effective().await;
    assert_eq!(body["model"], json!({}));

    for (change, field, code) in [
        (model("provider", Some("openai")), "api-key", "bad_model"),
        (model("provider", Some("nothing")), "provider", "bad_model"),
        (model("api-key", Some("sk-live")), "api-key", "bad_model"),
        (model("temperature", Some("1")), "key", "unknown_key"),
        (model("api-key", Some("***")), "value", "secret_not_set"),
    ] {
        let err = live.change("ops", Some(&etag), change.clone()).await;
        match err {
            Err(LiveError::Invalid {
                field: f, code: c, ..
            }) => assert_eq!((f, c), (field, code), "{change:?}"),
            other => panic!("{change:?}: {other:?}"),
        }
    }
    assert_eq!(live.effective().await, (body, etag.clone()));

    // One key at a time where it fits; several at once by import.
    live.change("ops", Some(&etag), model("provider", Some("echo")))
        .await
        .unwrap();
    assert_eq!(provider.borrow().name(), "echo");
    let (_, etag) = live.effective().await;
    let openai = OverlayDocument {
        model: [
            ("provider".to_string(), "openai".to_string()),
            ("api-key".to_string(), "sk-live".to_string()),
            ("voice".to_string(), "cedar".to_string()),
        ]
        .into(),
        ..OverlayDocument::default()
    };
    let record = live.import("ops", Some(&etag), &openai).await.unwrap();
    assert!(
        !record.after.to_string().contains("sk-live"),
        "{}",
        record.after
    );
    assert_eq!(provider.borrow().name(), "openai");
    let (body, etag) = live.effective().await;
    assert_eq!(body["model"]["api-key"]["value"], "***");
    assert_eq!(body["model"]["voice"]["value"], "cedar");
    assert_eq!(body["model"]["provider"]["source"], "live");

    // The key given back as *** is kept; the voice left out goes back to the default.
    let (exported, _) = live.export().await;
    assert_eq!(exported.model["api-key"], "***");
    let mut again = exported.clone();
    again.model.remove("voice");
    live.import("ops", Some(&etag), &again).await.unwrap();
    assert_eq!(provider.borrow().name(), "openai");
    assert!(live.effective().await.0["model"].get("voice").is_none());

    // Without the live keys: the file's (here the default, offline) again.
    let (_, etag) = live.effective().await;
    live.import("ops", Some(&etag), &OverlayDocument::default())
        .await
        .unwrap();
    assert_eq!(provider.borrow().name(), "offline");
}

#[tokio::test]
async fn live_trunks_and_model_keys_are_in_effect_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = live(dir.path(), &[]).await;
        let (_, etag) = first.effective().await;
        let body = json!({"outbound-proxy": "127.0.0.1:5090", "password": "trunk-secret"});
        first
            .change("ops", Some(&etag), trunk("pbx", body))
            .await
            .unwrap();
        let (_, etag) = first.effective().await;
        first
            .change("ops", Some(&etag), model("provider", Some("echo")))
            .await
            .unwrap();
    }
    let again = live(dir.path(), &[]).await;
    let trunks = again.trunks().borrow().clone();
    let pbx = trunks.iter().find(|t| t.name == "pbx").unwrap();
    assert_eq!(pbx.password.as_deref(), Some("trunk-secret"));
    assert!(trunks.iter().any(|t| t.name == "carrier"));
    assert_eq!(again.provider().borrow().name(), "echo");
}
