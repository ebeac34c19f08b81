//! Retention: the purge of old finished calls and the periodic purge task.

use super::*;

async fn retention_purge_removes_old_finished_calls_and_their_rows(db: Db) {
    let store = db.open().await;
    // More old calls than one purge chunk, each with rows in every child table.
    let old: Vec<String> = (0..1_100).map(|i| format!("old{i}")).collect();
    join_all(old.iter().enumerate().map(|(i, id)| {
        let store = &store;
        async move {
            store
                .create_call(new_call(id, "1", "2", "menu", T0 + i as i64))
                .await
                .unwrap();
            store.append_event(id, T0, "k", json!({})).await.unwrap();
            store
                .append_transcript(id, T0, Role::Caller, "ancient history")
                .await
                .unwrap();
            store.add_usage(usage(id, T0, 1, 1)).await.unwrap();
            if i % 100 == 0 {
                store
                    .set_recording(id, &format!("/rec/{id}.wav"))
                    .await
                    .unwrap();
            }
            store.end_call(id, ended(T0 + DAY)).await.unwrap();
        }
    }))
    .await;
    // An old call still active (a stuck call) and a recent one stay.
    store
        .create_call(new_call("stuck", "1", "2", "menu", T0))
        .await
        .unwrap();
    store
        .create_call(new_call("recent", "1", "2", "menu", T0 + 10 * DAY))
        .await
        .unwrap();
    store
        .end_call("recent", ended(T0 + 10 * DAY))
        .await
        .unwrap();

    let purged = store.purge_older_than(T0 + 5 * DAY).await.unwrap();
    assert_eq!(purged.calls, 1_100);
    assert_eq!(purged.recordings.len(), 11);
    assert!(purged.recordings.contains(&"/rec/old500.wav".to_string()));
    assert!(matches!(
        store.get_call("old7").await,
        Err(StoreError::NotFound { .. })
    ));
    let left = store
        .list_calls(&CallFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&left), ["recent", "stuck"]);
    let search = CallFilter {
        text: Some("ancient".into()),
        ..Default::default()
    };
    assert!(store.list_calls(&search).await.unwrap().calls.is_empty());
    assert!(store.usage_per_day(0, i64::MAX).await.unwrap().is_empty());
    assert_eq!(store.purge_older_than(T0 + 5 * DAY).await.unwrap().calls, 0);
}

async fn purge_task_deletes_recordings_and_stops_when_aborted(db: Db) {
    let cfg = StoreConfig {
        retention_days: 1,
        ..db.config()
    };
    let store = open(&cfg).await.unwrap();
    let wav = db.dir.path().join("old.wav");
    std::fs::write(&wav, b"RIFF").unwrap();
    store
        .create_call(new_call("old", "1", "2", "menu", T0))
        .await
        .unwrap();
    store
        .set_recording("old", wav.to_str().unwrap())
        .await
        .unwrap();
    store.end_call("old", ended(T0 + 1)).await.unwrap();
    let task = spawn_purge_task(store.clone(), &cfg).unwrap();
    for _ in 0..200 {
        if store.get_call("old").await.is_err() && !wav.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    task.abort();
    assert!(matches!(
        store.get_call("old").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(!wav.exists());
    let off = StoreConfig {
        retention_days: 0,
        ..cfg
    };
    assert!(spawn_purge_task(store, &off).is_none());
}

on_both!(
    retention_purge_removes_old_finished_calls_and_their_rows,
    purge_task_deletes_recordings_and_stops_when_aborted,
);
