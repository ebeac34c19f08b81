//! Store tests on real SQLite files in temporary folders.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use super::*;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("nested/calls.db"),
        ..StoreConfig::default()
    }
}

fn new_call(id: &str, caller: &str, callee: &str, agent: &str, at: i64) -> NewCall {
    NewCall {
        id: id.into(),
        direction: Direction::Inbound,
        caller: caller.into(),
        callee: callee.into(),
        agent: Some(agent.into()),
        agent_version: Some("1.0.0".into()),
        started_at_ms: at,
        metadata: json!({"transport": "udp"}),
    }
}

fn ended(at_ms: i64) -> CallEnd {
    CallEnd {
        at_ms,
        reason: "caller hung up".into(),
        abnormal: false,
        outcome: None,
    }
}

fn item(provider: &str, stage: &str, kind: &str, unit: &str, amount: f64) -> UsageItem {
    UsageItem {
        provider: provider.into(),
        stage: stage.into(),
        kind: kind.into(),
        unit: unit.into(),
        amount,
    }
}

fn tokens(kind: &str, amount: u64) -> UsageItem {
    item("openai", "speech-to-speech", kind, "tokens", amount as f64)
}

/// A speech-to-speech report: the totals, and a split like the providers give.
fn usage(call_id: &str, at_ms: i64, input: u64, output: u64) -> UsageRecord {
    UsageRecord {
        call_id: call_id.into(),
        at_ms,
        items: vec![
            tokens("input", input),
            tokens("input-audio", input / 2),
            tokens("output", output),
            tokens("output-audio", output),
            tokens("output-text", 0),
        ],
    }
}

fn ids(page: &CallPage) -> Vec<&str> {
    page.calls.iter().map(|c| c.id.as_str()).collect()
}

#[tokio::test]
async fn round_trip_keeps_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
    store
        .create_call(new_call("c1", "sip:+15550100001@pbx", "1000", "menu", T0))
        .await
        .unwrap();
    store.set_answered("c1", T0 + 100).await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            store
                .append_event("c1", T0 + 200 + i, "dtmf", json!({"digit": i}))
                .await
                .unwrap(),
        );
        seqs.push(
            store
                .append_transcript("c1", T0 + 201 + i, Role::Caller, &format!("line {i}"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    store
        .add_usage(usage("c1", T0 + 300, 10, 20))
        .await
        .unwrap();
    store.add_usage(usage("c1", T0 + 400, 1, 2)).await.unwrap();
    let latency = TurnLatency {
        call_id: "c1".into(),
        turn: 1,
        host_in_ms: 0.4,
        model_ms: 310.0,
        host_out_ms: 0.6,
        total_ms: 311.0,
    };
    store.record_latency(latency.clone()).await.unwrap();
    store.set_recording("c1", "/rec/c1.wav").await.unwrap();
    let end = CallEnd {
        outcome: Some("booked".into()),
        ..ended(T0 + 500)
    };
    store.end_call("c1", end).await.unwrap();
    // Entries may still arrive after the end (e.g. a final usage report's event).
    assert_eq!(
        store
            .append_event("c1", T0 + 600, "late", json!(null))
            .await
            .unwrap(),
        11
    );

    let d = store.get_call("c1").await.unwrap();
    let c = &d.call;
    assert_eq!(c.state, CallState::Ended);
    assert_eq!(
        (c.answered_at_ms, c.ended_at_ms),
        (Some(T0 + 100), Some(T0 + 500))
    );
    assert_eq!(c.end_reason.as_deref(), Some("caller hung up"));
    assert_eq!(c.outcome.as_deref(), Some("booked"));
    assert_eq!(c.recording.as_deref(), Some("/rec/c1.wav"));
    assert_eq!((c.input_tokens, c.output_tokens), (11, 22));
    assert_eq!(c.metadata, json!({"transport": "udp"}));
    assert_eq!(c.agent_version.as_deref(), Some("1.0.0"));
    let event_seqs: Vec<u64> = d.events.iter().map(|e| e.seq).collect();
    assert_eq!(event_seqs, vec![1, 3, 5, 7, 9, 11]);
    assert_eq!(d.events[2].data, json!({"digit": 2}));
    assert_eq!(d.events[2].kind, "dtmf");
    let lines: Vec<&str> = d.transcript.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(lines, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(
        d.usage,
        [
            tokens("input", 11),
            tokens("input-audio", 5),
            tokens("output", 22),
            tokens("output-audio", 22),
            tokens("output-text", 0),
        ]
    );
    assert_eq!(d.latencies, vec![latency]);
    // The record serialises for the API as it is.
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["call"]["state"], "ended");
    assert_eq!(v["transcript"][0]["role"], "caller");
}

#[tokio::test]
async fn write_all_applies_in_order_and_a_refused_write_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
    let event = |call: &str, at_ms: i64, kind: &str| Write::Event {
        call_id: call.into(),
        at_ms,
        kind: kind.into(),
        data: json!({"at": at_ms}),
    };
    let mut writes = vec![
        Write::Create(new_call("w1", "+15550100001", "1000", "menu", T0)),
        event("w1", T0, "created"),
        Write::Answered {
            call_id: "w1".into(),
            at_ms: T0 + 10,
        },
        // Refused (no such call), and refused before queueing (empty id): the rest stands.
        event("nope", T0, "created"),
        Write::Create(new_call("", "+15550100001", "1000", "menu", T0)),
        Write::Transcript {
            call_id: "w1".into(),
            at_ms: T0 + 20,
            role: Role::Caller,
            text: "hello".into(),
        },
        Write::Usage(usage("w1", T0 + 30, 5, 7)),
    ];
    // Enough events that the writer takes them in more than one batch.
    writes.extend((0..3000).map(|i| event("w1", T0 + 40 + i, "tick")));
    writes.push(Write::End {
        call_id: "w1".into(),
        end: ended(T0 + 5000),
    });
    writes.push(event("w1", T0 + 5001, "ended"));
    let results = store.write_all(writes).await;
    assert_eq!(results.len(), 3009);
    assert!(matches!(results[3], Err(StoreError::NotFound { .. })));
    assert!(matches!(results[4], Err(StoreError::InvalidInput(_))));
    let refused: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].is_err())
        .collect();
    assert_eq!(refused, [3, 4]);

    let d = store.get_call("w1").await.unwrap();
    assert_eq!(d.call.answered_at_ms, Some(T0 + 10));
    assert_eq!(d.call.ended_at_ms, Some(T0 + 5000));
    assert_eq!((d.call.input_tokens, d.call.output_tokens), (5, 7));
    assert_eq!(d.transcript[0].seq, 2, "numbered between the events");
    let kinds: Vec<&str> = d.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 3002);
    assert_eq!((kinds[0], kinds[3001]), ("created", "ended"));
    let at: Vec<i64> = d.events.iter().map(|e| e.at_ms).collect();
    assert!(at.is_sorted(), "events kept their order");
    let seqs: Vec<u64> = d.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs[..3], [1, 3, 4]);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
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

#[tokio::test]
async fn filters_and_stable_paging() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
    // 30 calls a minute apart; agents alternate; every third call is from one caller; two
    // calls share a start time to exercise the tie-break.
    for i in 0..30i64 {
        let at = if i == 11 {
            T0 + 10 * 60_000
        } else {
            T0 + i * 60_000
        };
        let caller = if i % 3 == 0 {
            "\"Ann\" <sip:+1-555-010-0001@pbx>".to_string()
        } else {
            format!("sip:+4930{i:04}@pbx")
        };
        let agent = if i % 2 == 0 { "menu" } else { "receptionist" };
        let call = NewCall {
            direction: if i == 5 {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            ..new_call(&format!("c{i:02}"), &caller, "sip:1000@host", agent, at)
        };
        store.create_call(call).await.unwrap();
        if i < 25 {
            store
                .end_call(&format!("c{i:02}"), ended(at + 1000))
                .await
                .unwrap();
        }
    }
    let list = |f: CallFilter| {
        let store = &store;
        async move { store.list_calls(&f).await.unwrap() }
    };
    let all = list(CallFilter {
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(all.calls.len(), 30);
    assert_eq!(all.next_cursor, None);
    assert_eq!(all.calls[0].id, "c29");
    assert_eq!(all.calls[0].direction, Direction::Inbound);
    let active = list(CallFilter {
        active: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&active), ["c29", "c28", "c27", "c26", "c25"]);
    let finished = list(CallFilter {
        active: Some(false),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(finished.calls.len(), 25);
    let menu = list(CallFilter {
        agent: Some("menu".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(menu.calls.len(), 15);
    assert!(
        menu.calls
            .iter()
            .all(|c| c.agent.as_deref() == Some("menu"))
    );
    // Any spelling of the number finds the caller; the callee matches too.
    for spelling in ["+1 (555) 010-0001", "tel:+15550100001", "15550100001"] {
        let ann = list(CallFilter {
            number: Some(spelling.into()),
            limit: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(ann.calls.len(), 10, "{spelling}");
    }
    let to_desk = list(CallFilter {
        number: Some("1000".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(to_desk.calls.len(), 30);
    let window = list(CallFilter {
        from_ms: Some(T0 + 20 * 60_000),
        to_ms: Some(T0 + 23 * 60_000),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&window), ["c22", "c21", "c20"]);
    let combined = list(CallFilter {
        active: Some(false),
        agent: Some("menu".into()),
        number: Some("+15550100001".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&combined), ["c24", "c18", "c12", "c06", "c00"]);
    assert!(matches!(
        store
            .list_calls(&CallFilter {
                number: Some(" ".into()),
                ..Default::default()
            })
            .await,
        Err(StoreError::InvalidInput(_))
    ));

    // Page by 7 while new calls keep arriving (newer, and one sharing the boundary start
    // time): the pages still cover the original 30 exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut extra = 0;
    loop {
        let page = list(CallFilter {
            limit: 7,
            cursor: cursor.clone(),
            ..Default::default()
        })
        .await;
        seen.extend(page.calls.iter().map(|c| c.id.clone()));
        let start = page.calls.last().map(|c| c.started_at_ms).unwrap();
        for at in [T0 + 3_600_000 + extra, start] {
            extra += 1;
            store
                .create_call(new_call(&format!("new{extra}"), "9", "1000", "menu", at))
                .await
                .unwrap();
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = all.calls.iter().map(|c| c.id.clone()).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn transcript_search() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
    let lines = [
        ("a", "I would like a refund for my order"),
        ("b", "Can I book an appointment on Tuesday?"),
        ("c", "The refunded amount was wrong, café closed"),
    ];
    for (i, (id, text)) in lines.iter().enumerate() {
        store
            .create_call(new_call(id, "1", "2", "menu", T0 + i as i64))
            .await
            .unwrap();
        store
            .append_transcript(id, T0 + 10, Role::Agent, "Hello, how can I help?")
            .await
            .unwrap();
        store
            .append_transcript(id, T0 + 20, Role::Caller, text)
            .await
            .unwrap();
    }
    let search = |text: &str| {
        let f = CallFilter {
            text: Some(text.into()),
            ..Default::default()
        };
        let store = &store;
        async move {
            let page = store.list_calls(&f).await.unwrap();
            page.calls.into_iter().map(|c| c.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(search("refund").await, ["c", "a"]);
    assert_eq!(search("REFUND order").await, ["a"]);
    assert_eq!(search("tuesday").await, ["b"]);
    assert_eq!(search("cafe").await, ["c"]);
    assert_eq!(search("help").await, ["c", "b", "a"]);
    assert!(search("dentist").await.is_empty());
    // FTS syntax in user input is just text, never an error.
    assert!(search("\"unterminated AND (NOT * ^").await.is_empty());
    assert_eq!(search("refund\"").await, ["c", "a"]);
    // Nothing searchable: no text filter at all.
    assert_eq!(search(" ?! ").await.len(), 3);
}

#[tokio::test]
async fn usage_per_utc_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
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

#[tokio::test]
async fn usage_items_are_stored_and_read_back_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = SqliteStore::open(&cfg).unwrap();
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

    // Whole amounts are stored as integers, fractional ones as reals.
    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    let types: Vec<String> = conn
        .prepare("SELECT DISTINCT typeof(amount) FROM usage_items WHERE unit = ?1")
        .unwrap()
        .query_map(["tokens"], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(types, ["integer"]);
}

#[tokio::test]
async fn migration_2_turns_version_1_usage_rows_into_items() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_at(&dir.path().join("v1.db"));
    {
        let mut conn = rusqlite::Connection::open(&cfg.path).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(&format!(
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
        ))
        .unwrap();
    }
    let before = [("2025-12-31", 5, 6), ("2026-01-01", 801, 207)];

    let store = SqliteStore::open(&cfg).unwrap();
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
    store.shutdown().await.unwrap();
    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    let old_table: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'usage'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_table, 0, "the version-1 table is gone");
}

#[tokio::test]
async fn retention_purge_removes_old_finished_calls_and_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&config(dir.path())).unwrap();
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

#[tokio::test]
async fn purge_task_deletes_recordings_and_stops_when_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        retention_days: 1,
        ..config(dir.path())
    };
    let store = Arc::new(SqliteStore::open(&cfg).unwrap());
    let wav = dir.path().join("old.wav");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&config(dir.path())).unwrap());
    const CALLS: usize = 200;
    const EVENTS: u64 = 50;
    let tasks: Vec<_> = (0..CALLS)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("call{c}");
                store
                    .create_call(new_call(&id, "1", "2", "menu", T0 + c as i64))
                    .await
                    .unwrap();
                for i in 0..EVENTS {
                    let seq = if i % 5 == 4 {
                        store
                            .append_transcript(&id, T0 + i as i64, Role::Agent, &format!("{i}"))
                            .await
                    } else {
                        store.append_event(&id, T0 + i as i64, "n", json!(i)).await
                    };
                    assert_eq!(seq.unwrap(), i + 1);
                }
                store.end_call(&id, ended(T0 + 100)).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for c in 0..CALLS {
        let d = store.get_call(&format!("call{c}")).await.unwrap();
        assert_eq!(d.events.len() + d.transcript.len(), EVENTS as usize);
        for e in &d.events {
            assert_eq!(e.data, json!(e.seq - 1));
        }
        for t in &d.transcript {
            assert_eq!(t.text, (t.seq - 1).to_string());
        }
        assert!(d.events.windows(2).all(|w| w[0].seq < w[1].seq));
    }
    store.shutdown().await.unwrap();
    assert!(matches!(
        store.append_event("call0", 0, "late", json!(null)).await,
        Err(StoreError::Closed)
    ));
    // Reads still work after the writer stopped.
    assert_eq!(
        store.get_call("call0").await.unwrap().call.state,
        CallState::Ended
    );
}

const CRASH_ENV: &str = "SWITCHBOARD_STORE_CRASH_TEST_DB";
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
            path: path.into(),
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&cfg).unwrap();
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

#[tokio::test]
async fn killed_process_loses_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let test_path = module_path!().split_once("::").unwrap().1;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{test_path}::crash_child"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &db)
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

    let store = SqliteStore::open(&config_at(&db)).unwrap();
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
    assert_eq!(store.close_abandoned_calls().await.unwrap(), 1);
    let live = store.get_call("live").await.unwrap().call;
    assert_eq!(live.state, CallState::EndedAbnormally);
    assert_eq!(live.end_reason.as_deref(), Some("host restarted"));
    assert_eq!(live.ended_at_ms, Some(T0 + 1000));
    let done = store.get_call("done").await.unwrap().call;
    assert_eq!(
        (done.state, done.ended_at_ms),
        (CallState::Ended, Some(T0 + 5))
    );
    assert_eq!(store.close_abandoned_calls().await.unwrap(), 0);
}

fn config_at(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.into(),
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn reopen_keeps_data_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let store = SqliteStore::open(&cfg).unwrap();
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
    let store = SqliteStore::open(&cfg).unwrap();
    assert_eq!(store.close_abandoned_calls().await.unwrap(), 1);
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

    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, 0)",
        [schema::latest() + 1],
    )
    .unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&cfg),
        Err(StoreError::SchemaTooNew { .. })
    ));
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
    let err = toml::from_str::<StoreConfig>("retention_days = 3").unwrap_err();
    assert!(err.to_string().contains("retention_days"), "{err}");
}
