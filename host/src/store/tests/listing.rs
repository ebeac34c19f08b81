//! Listing calls: filters, stable cursor paging and transcript search.

use super::*;

async fn filters_and_stable_paging(db: Db) {
    let store = db.open().await;
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

async fn transcript_search(db: Db) {
    let store = db.open().await;
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

on_both!(filters_and_stable_paging, transcript_search,);
