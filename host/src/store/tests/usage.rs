//! Usage: per UTC day, items stored and read back grouped, and the migration of version-1
//! usage rows into items.

use super::*;

async fn usage_per_utc_day(db: Db) {
    let store = db.open().await;
    store
        .create_call(new_call("x", "1", "2", "menu", T0 - DAY))
        .await
        .unwrap();
    store
        .create_call(new_call("y", "1", "2", "menu", T0))
        .await
        .unwrap();
    store.add_usage(usage("x", T0 - 1, 5, 6)).await.unwrap();
    store.add_usage(usage("x", T0, 100, 200)).await.unwrap();
    store
        .add_usage(usage("y", T0 + DAY - 1, 1, 2))
        .await
        .unwrap();
    store
        .add_usage(usage("y", T0 + 2 * DAY, 7, 7))
        .await
        .unwrap();
    let days = store.usage_per_day(T0 - DAY, T0 + 2 * DAY).await.unwrap();
    let got: Vec<(&str, u64, u64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.input_tokens, d.output_tokens))
        .collect();
    assert_eq!(got, [("2025-12-31", 5, 6), ("2026-01-01", 101, 202)]);
    assert!(
        store
            .usage_per_day(T0 + 3 * DAY, T0 + 4 * DAY)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn usage_items_are_stored_and_read_back_grouped(db: Db) {
    let store = db.open().await;
    for id in ["a", "b"] {
        store
            .create_call(new_call(id, "1", "2", "menu", T0))
            .await
            .unwrap();
    }
    let stt = |seconds| item("deepgram", "stt", "input-audio", "seconds", seconds);
    let report = |at_ms, items| UsageRecord {
        call_id: "a".into(),
        at_ms,
        items,
    };
    store
        .add_usage(report(T0 + 1, vec![stt(1.25), tokens("input", 300)]))
        .await
        .unwrap();
    store
        .add_usage(usage("b", T0 + 2, 1000, 1000))
        .await
        .unwrap();
    store
        .add_usage(report(
            T0 + 3,
            vec![
                tokens("input", 1),
                stt(0.5),
                tokens("output", 96),
                item("gemini", "speech-to-speech", "input", "tokens", 7.0),
                item("local", "mcp", "tool", "calls", 2.0),
            ],
        ))
        .await
        .unwrap();
    store.add_usage(report(T0 + 4, Vec::new())).await.unwrap();

    let a = store.get_call("a").await.unwrap();
    assert_eq!(
        a.usage,
        [
            stt(1.75),
            tokens("input", 301),
            tokens("output", 96),
            item("gemini", "speech-to-speech", "input", "tokens", 7.0),
            item("local", "mcp", "tool", "calls", 2.0),
        ],
        "summed per provider, stage, kind and unit, in the order first reported"
    );
    // Totals count tokens of every provider; seconds and calls are not tokens.
    assert_eq!((a.call.input_tokens, a.call.output_tokens), (308, 96));
    let days = store.usage_per_day(T0, T0 + DAY).await.unwrap();
    assert_eq!(
        (days[0].input_tokens, days[0].output_tokens),
        (308 + 1000, 96 + 1000)
    );
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(
        v["usage"][0],
        json!({"provider": "deepgram", "stage": "stt", "kind": "input-audio",
               "unit": "seconds", "amount": 1.75})
    );
}

/// SQLite only: its NUMERIC column keeps whole amounts as integers (Postgres stores doubles).
#[tokio::test]
async fn whole_amounts_are_stored_as_integers_on_sqlite() {
    let db = Db::sqlite();
    let store = db.open().await;
    store
        .create_call(new_call("a", "1", "2", "menu", T0))
        .await
        .unwrap();
    store.add_usage(usage("a", T0 + 1, 300, 96)).await.unwrap();
    let conn = rusqlite::Connection::open(&db.config().path).unwrap();
    let types: Vec<String> = conn
        .prepare("SELECT DISTINCT typeof(amount) FROM usage_items WHERE unit = ?1")
        .unwrap()
        .query_map(["tokens"], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(types, ["integer"]);
}

async fn migration_2_turns_version_1_usage_rows_into_items(db: Db) {
    db.at_version(
        1,
        &format!(
            "INSERT INTO calls (pk, id, direction, caller, callee, caller_key, callee_key,
                 started_at_ms, state, input_tokens, output_tokens, metadata)
             VALUES (1, 'old', 'inbound', '1', '2', '1', '2', {T0}, 'ended', 801, 207, 'null'),
                    (2, 'unanswered', 'inbound', '1', '2', '1', '2', {T0}, 'ended', 5, 6, 'null');
             INSERT INTO events (call, seq, at_ms, kind, data)
             VALUES (1, 1, {T0}, 'created', '{{}}'),
                    (1, 2, {T0}, 'answered', '{{\"codec\":\"PCMU\",\"model\":\"openai\"}}');
             -- As the call layer wrote them (split NULL), and with the split a provider gives.
             INSERT INTO usage (call, at_ms, input_tokens, output_tokens, input_audio_tokens,
                 input_text_tokens, output_audio_tokens, output_text_tokens)
             VALUES (1, {T0} + 10, 301, 111, NULL, NULL, NULL, NULL),
                    (1, {T0} + 20, 500, 96, 120, 380, 96, 0),
                    (2, {T0} - 1, 5, 6, NULL, 5, NULL, NULL);"
        ),
    )
    .await;
    let before = [("2025-12-31", 5, 6), ("2026-01-01", 801, 207)];

    let store = db.open().await;
    let old = store.get_call("old").await.unwrap();
    let openai = |kind: &str, n| tokens(kind, n);
    assert_eq!(
        old.usage,
        [
            openai("input", 801),
            openai("output", 207),
            openai("input-text", 380),
            openai("input-audio", 120),
            openai("output-text", 0),
            openai("output-audio", 96),
        ]
    );
    assert_eq!((old.call.input_tokens, old.call.output_tokens), (801, 207));
    let unanswered = store.get_call("unanswered").await.unwrap();
    assert_eq!(
        unanswered.usage,
        [
            item("unknown", "speech-to-speech", "input", "tokens", 5.0),
            item("unknown", "speech-to-speech", "input-text", "tokens", 5.0),
            item("unknown", "speech-to-speech", "output", "tokens", 6.0),
        ]
    );
    let days = store.usage_per_day(T0 - DAY, T0 + DAY).await.unwrap();
    let got: Vec<(&str, u64, u64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.input_tokens, d.output_tokens))
        .collect();
    assert_eq!(got, before, "usage per day answers as before the migration");
    assert!(!db.has_table("usage"), "the version-1 table is gone");
}

on_both!(
    usage_per_utc_day,
    usage_items_are_stored_and_read_back_grouped,
    migration_2_turns_version_1_usage_rows_into_items,
);
