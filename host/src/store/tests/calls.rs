//! Writing and reading calls: the round trip, batched writes, many concurrent calls.

use super::*;
use crate::domain::events::StageLatency;

async fn round_trip_keeps_everything_in_order(db: Db) {
    let store = db.open().await;
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
        stages: Some(StageLatency {
            stt_ms: 80.0,
            llm_ms: 150.0,
            tts_ms: 70.0,
        }),
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
    assert_eq!(c.transport.as_deref(), Some("udp"));
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

async fn write_all_applies_in_order_and_a_refused_write_stops_nothing(db: Db) {
    let store = db.open().await;
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

async fn two_hundred_concurrent_calls_keep_their_order(db: Db) {
    let store = db.open().await;
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

async fn migration_3_takes_the_transport_of_older_calls_from_their_created_event(db: Db) {
    db.at_version(
        2,
        &format!(
            "INSERT INTO calls (pk, id, direction, caller, callee, caller_key, callee_key,
                 started_at_ms, state, metadata)
             VALUES (1, 'old', 'inbound', '1', '2', '1', '2', {T0}, 'ended', 'null'),
                    (2, 'bare', 'inbound', '1', '2', '1', '2', {T0}, 'ended', 'null');
             INSERT INTO events (call, seq, at_ms, kind, data)
             VALUES (1, 1, {T0}, 'created', '{{\"transport\":\"openai-sip\"}}');"
        ),
    )
    .await;
    let store = db.open().await;
    let old = store.get_call("old").await.unwrap().call;
    assert_eq!(old.transport.as_deref(), Some("openai-sip"));
    assert_eq!(store.get_call("bare").await.unwrap().call.transport, None);
}

/// Postgres only: a write Postgres itself refuses (text with a NUL byte, which SQLite keeps)
/// aborts its transaction there; the writer replays the batch without it, so only that write
/// fails, be it one of the events inserted together or another write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_postgres_refuses_fails_alone_in_its_batch() {
    let Some(db) = Db::postgres() else {
        return;
    };
    let store = db.open().await;
    let event = |kind: &str| Write::Event {
        call_id: "p1".into(),
        at_ms: T0,
        kind: kind.into(),
        data: json!({"kind": kind}),
    };
    let results = store
        .write_all(vec![
            Write::Create(new_call("p1", "1", "2", "menu", T0)),
            event("a"),
            event("bad\0kind"),
            event("b"),
            Write::Transcript {
                call_id: "p1".into(),
                at_ms: T0,
                role: Role::Caller,
                text: "nul\0here".into(),
            },
            event("c"),
        ])
        .await;
    let refused: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].is_err())
        .collect();
    assert_eq!(refused, [2, 4], "{results:?}");
    let d = store.get_call("p1").await.unwrap();
    let events: Vec<(u64, &str)> = d.events.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    assert_eq!(events, [(1, "a"), (2, "b"), (3, "c")]);
    assert!(d.transcript.is_empty());
    // The writer goes on.
    assert_eq!(
        store
            .append_event("p1", T0, "d", json!(null))
            .await
            .unwrap(),
        4
    );
}

/// The call's detail counts its barge-ins, reprompts and fillers from its events.
async fn the_conversation_is_counted_from_the_events(db: Db) {
    let store = db.open().await;
    store
        .create_call(new_call("c1", "sip:+15550100001@pbx", "1000", "menu", T0))
        .await
        .unwrap();
    for (i, kind) in ["barge-in", "filler", "silence-reprompt", "filler", "dtmf"]
        .into_iter()
        .enumerate()
    {
        store
            .append_event("c1", T0 + i as i64, kind, json!({}))
            .await
            .unwrap();
    }
    let d = store.get_call("c1").await.unwrap();
    assert_eq!(
        d.conversation,
        ConversationCounts {
            interruptions: 1,
            reprompts: 1,
            fillers: 2,
        }
    );
}

on_both!(
    the_conversation_is_counted_from_the_events,
    migration_3_takes_the_transport_of_older_calls_from_their_created_event,
    round_trip_keeps_everything_in_order,
    write_all_applies_in_order_and_a_refused_write_stops_nothing,
    two_hundred_concurrent_calls_keep_their_order,
);
