//! The live configuration overlay: entries stored, replaced and forgotten with their audit
//! records, across a reopen; a whole overlay replaced at once.

use super::*;

fn entry(kind: OverlayKind, key: &str, value: Option<&str>) -> OverlayEntry {
    OverlayEntry {
        kind,
        agent: if kind == OverlayKind::Route {
            ""
        } else {
            "menu"
        }
        .into(),
        key: key.into(),
        value: value.map(str::to_string),
        at_ms: T0,
    }
}

fn change(kind: OverlayKind, key: &str, value: Option<&str>, forget: bool) -> ConfigChange {
    ConfigChange {
        write: OverlayWrite::One {
            entry: entry(kind, key, value),
            forget,
        },
        at_ms: T0,
        who: "ops".into(),
        action: if value.is_some() { "set" } else { "delete" }.into(),
        target: format!("x/{key}"),
        before: serde_json::Value::Null,
        after: json!(if kind == OverlayKind::Secret {
            Some("***")
        } else {
            value
        }),
    }
}

async fn changes_persist_with_their_audit_newest_first(db: Db) {
    let store = db.open().await;
    let first = store
        .record_config_change(change(OverlayKind::Route, "1000", Some("menu"), false))
        .await
        .unwrap();
    store
        .record_config_change(change(
            OverlayKind::Route,
            "1000",
            Some("receptionist"),
            false,
        ))
        .await
        .unwrap();
    store
        .record_config_change(change(OverlayKind::Secret, "crm", Some("s3cret"), false))
        .await
        .unwrap();
    store
        .record_config_change(change(OverlayKind::Setting, "address", None, false))
        .await
        .unwrap();
    store
        .record_config_change(change(OverlayKind::Route, "2000", Some("menu"), false))
        .await
        .unwrap();
    let last = store
        .record_config_change(change(OverlayKind::Route, "2000", None, true))
        .await
        .unwrap();
    assert!(last.id > first.id);
    store.shutdown().await.unwrap();

    let store = db.open().await;
    let overlay = store.config_overlay().await.unwrap();
    let seen: Vec<_> = overlay
        .iter()
        .map(|e| (e.kind, e.key.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (OverlayKind::Route, "1000", Some("receptionist")),
            (OverlayKind::Secret, "crm", Some("s3cret")),
            (OverlayKind::Setting, "address", None),
        ]
    );
    let audit = store.config_audit(10).await.unwrap();
    assert_eq!(audit.len(), 6);
    assert_eq!(audit[0].id, last.id);
    assert_eq!(audit[0].action, "delete");
    assert_eq!(audit[3].after, json!("***"));
    assert_eq!(store.config_audit(2).await.unwrap().len(), 2);
}

async fn an_import_replaces_the_whole_overlay_in_one_audited_change(db: Db) {
    let store = db.open().await;
    for key in ["1000", "2000"] {
        store
            .record_config_change(change(OverlayKind::Route, key, Some("menu"), false))
            .await
            .unwrap();
    }
    let import = ConfigChange {
        write: OverlayWrite::All(vec![
            entry(OverlayKind::Route, "3000", Some("menu")),
            entry(OverlayKind::Trunk, "carrier", Some("{}")),
        ]),
        at_ms: T0 + 1,
        who: "ops".into(),
        action: "import".into(),
        target: "live".into(),
        before: json!({"routes": {"1000": "menu", "2000": "menu"}}),
        after: json!({"routes": {"3000": "menu"}}),
    };
    let record = store.record_config_change(import).await.unwrap();
    assert_eq!(record.action, "import");
    let keys: Vec<_> = store
        .config_overlay()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.key))
        .collect();
    assert_eq!(
        keys,
        [
            (OverlayKind::Route, "3000".to_string()),
            (OverlayKind::Trunk, "carrier".to_string())
        ]
    );
    assert_eq!(store.config_audit(10).await.unwrap().len(), 3);
}

on_both!(
    changes_persist_with_their_audit_newest_first,
    an_import_replaces_the_whole_overlay_in_one_audited_change,
);
