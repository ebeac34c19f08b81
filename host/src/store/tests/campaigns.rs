use super::*;
use crate::store::campaigns::*;

fn campaign(id: &str) -> CampaignRecord {
    CampaignRecord {
        id: id.into(),
        name: "reminders".into(),
        state: CampaignState::Ready,
        state_reason: None,
        settings: json!({"pacing": {"max_concurrent": 2}}),
        created_at_ms: T0,
        updated_at_ms: T0,
    }
}

fn contact(number: &str, at: i64) -> NewContact {
    NewContact {
        number: number.into(),
        name: format!("n{number}"),
        time_zone: None,
        zones: vec!["America/New_York".into(), "America/Chicago".into()],
        metadata: json!({"patient": number}),
        next_at_ms: at,
    }
}

async fn contacts_go_pending_dialing_and_done_or_back_with_every_attempt_kept(db: Db) {
    let store = db.open().await;
    let contacts = vec![contact("+15550001", T0), contact("+15550002", T0 + 10)];
    store
        .create_campaign(campaign("c1"), contacts)
        .await
        .unwrap();
    // The same id again is refused and adds nothing.
    let dup = store.create_campaign(campaign("c1"), vec![contact("+1", T0)]);
    assert!(dup.await.is_err());

    let due = store.due_contacts("c1", T0, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].zones, ["America/New_York", "America/Chicago"]);
    assert_eq!(due[0].metadata, json!({"patient": "+15550001"}));
    let n = store
        .begin_attempt("c1", 0, T0, "2026-01-01")
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Not pending any more: a second begin is refused (no double dial).
    assert!(
        store
            .begin_attempt("c1", 0, T0, "2026-01-01")
            .await
            .is_err()
    );
    store.set_attempt_call("c1", 0, 1, "call-a").await.unwrap();
    let dialing = store.dialing_contacts("c1").await.unwrap();
    assert_eq!(dialing.len(), 1);
    assert_eq!(dialing[0].1.call_id.as_deref(), Some("call-a"));

    // Busy: back in an hour.
    let busy = AttemptEnd {
        outcome: "busy".into(),
        agent_outcome: None,
        at_ms: T0 + 5,
        retry_at_ms: Some(T0 + 3_600_000),
    };
    store.end_attempt("c1", 0, 1, busy).await.unwrap();
    assert_eq!(
        store.due_contacts("c1", T0 + 20, 10).await.unwrap().len(),
        1
    );
    let later = store.due_contacts("c1", T0 + 3_600_000, 10).await.unwrap();
    // Earliest due first.
    assert_eq!(later.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 0]);
    assert_eq!((later[1].attempts, later[1].attempts_on_last_day), (1, 1));

    // The second attempt the same day counts 2 for that day; then answered, done.
    assert_eq!(
        store
            .begin_attempt("c1", 0, T0 + 3_600_000, "2026-01-01")
            .await
            .unwrap(),
        2
    );
    let answered = AttemptEnd {
        outcome: "answered".into(),
        agent_outcome: Some("confirmed".into()),
        at_ms: T0 + 3_700_000,
        retry_at_ms: None,
    };
    store.end_attempt("c1", 0, 2, answered).await.unwrap();
    // The other is on the do-not-call list: skipped, no call counted.
    store
        .skip_contact("c1", 1, "dnc-skipped", T0 + 1)
        .await
        .unwrap();

    let all = store.campaign_contacts("c1").await.unwrap();
    let (first, attempts) = &all[0];
    assert_eq!(first.state, ContactState::Done);
    assert_eq!(first.outcome.as_deref(), Some("answered"));
    assert_eq!(first.agent_outcome.as_deref(), Some("confirmed"));
    assert_eq!((first.attempts, first.attempts_on_last_day), (2, 2));
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes, ["busy", "answered"]);
    let (second, skips) = &all[1];
    assert_eq!((second.attempts, skips.len()), (0, 1));
    assert_eq!(skips[0].call_id, None);

    let p = store.campaign("c1").await.unwrap();
    assert_eq!((p.contacts, p.done, p.pending, p.attempts), (2, 2, 0, 2));
    assert_eq!(
        p.outcomes,
        [("answered".to_string(), 1), ("dnc-skipped".to_string(), 1)]
    );
    assert!(matches!(
        store.campaign("nope").await,
        Err(StoreError::NoSuchCampaign(_))
    ));
}

async fn a_committed_attempt_and_the_dnc_list_survive_a_reopen(db: Db) {
    {
        let store = db.open().await;
        store
            .create_campaign(campaign("c2"), vec![contact("+15550003", T0)])
            .await
            .unwrap();
        store
            .set_campaign_state("c2", CampaignState::Paused, Some("trunk gone"), T0)
            .await
            .unwrap();
        store
            .begin_attempt("c2", 0, T0, "2026-01-01")
            .await
            .unwrap();
        let added = store
            .dnc_add(vec!["+15550009".into(), "+15550009".into()], "api", T0)
            .await
            .unwrap();
        assert_eq!(added, 1);
        // No shutdown: as after kill -9, only commits count.
    }
    let store = db.open().await;
    let p = store.campaign("c2").await.unwrap();
    assert_eq!(p.campaign.state, CampaignState::Paused);
    assert_eq!(p.campaign.state_reason.as_deref(), Some("trunk gone"));
    assert_eq!(p.dialing, 1);
    let dialing = store.dialing_contacts("c2").await.unwrap();
    assert_eq!(
        (dialing[0].0.attempts, dialing[0].1.call_id.clone()),
        (1, None)
    );
    assert!(store.dnc_contains("+15550009").await.unwrap());
    assert!(!store.dnc_contains("+15550003").await.unwrap());
    assert_eq!(store.dnc_list(10).await.unwrap()[0].source, "api");
    assert!(store.dnc_remove("+15550009").await.unwrap());
    assert!(!store.dnc_remove("+15550009").await.unwrap());
    // Cancelling closes what is still pending, not what is dialling.
    assert_eq!(store.close_pending("c2", "cancelled", T0).await.unwrap(), 0);
}

on_both!(
    contacts_go_pending_dialing_and_done_or_back_with_every_attempt_kept,
    a_committed_attempt_and_the_dnc_list_survive_a_reopen,
);
