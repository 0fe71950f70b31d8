//! Store conformance: the same behaviour on SQLite (always) and PostgreSQL (when
//! `TEST_POSTGRES_URL` is set; `scripts/test-services.sh` sets it up).

use std::collections::{BTreeMap, HashMap, HashSet};

use omnisync::planner::{
    CanonicalItem, Cause, Field, Observed, Planned, PrevState, StateKey, TargetRow,
};
use omnisync::store::{Lane, Settled, Store};
use omnisync_sdk::{Change, Currency, Money, Offer};

fn key(sku: &str, field: Field, loc: &str) -> StateKey {
    StateKey {
        sku: sku.into(),
        field,
        location: loc.into(),
    }
}

fn planned(sku: &str, qty: i64) -> Planned {
    Planned {
        key: key(sku, Field::Stock, "L1"),
        value: qty.to_string(),
        external_id: Some(format!("x-{sku}")),
        refs: BTreeMap::from([("inventory_item_id".to_string(), "9".to_string())]),
        change: Change::Stock {
            location: "L1".into(),
            quantity: qty,
            expected: Some(1),
        },
    }
}

async fn conformance(store: Store, channel: &str) {
    // Runs.
    let run = store.start_run("full", false, 1_000).await.unwrap();
    assert!(
        store
            .run(Some(run))
            .await
            .unwrap()
            .unwrap()
            .finished_at
            .is_none()
    );

    // Items and bindings round-trip without error, also when saved twice (upsert).
    let items = vec![CanonicalItem {
        sku: "A".into(),
        title: Some("Jacket".into()),
        price: Some(Money::new(12990, Currency::NOK)),
        stock: BTreeMap::from([("oslo".to_string(), 3)]),
    }];
    store.save_items(&items, 1_000).await.unwrap();
    store.save_items(&items, 1_001).await.unwrap();
    let observed = HashMap::from([(
        "A".to_string(),
        Observed {
            external_id: "v1".into(),
            refs: BTreeMap::new(),
            offer: Some(Offer::regular(Money::new(12990, Currency::NOK))),
            stock: BTreeMap::from([("L1".to_string(), 1)]),
        },
    )]);
    store
        .save_bindings(channel, &observed, 1_000)
        .await
        .unwrap();
    store
        .save_orphans(
            channel,
            &[("o1".into(), None, "no SKU".into())],
            true,
            1_000,
        )
        .await
        .unwrap();

    // Target state: an open difference, then closed (goes to history).
    let open = TargetRow {
        key: key("A", Field::Stock, "L1"),
        desired: "3".into(),
        observed: Some("1".into()),
        in_sync: false,
        cause: Some(Cause::SourceChanged),
    };
    store
        .save_state(channel, std::slice::from_ref(&open), &HashMap::new(), 1_000)
        .await
        .unwrap();
    let prev = store.load_prev(channel, None).await.unwrap();
    assert_eq!(
        prev.get(&open.key),
        Some(&PrevState {
            desired: "3".into(),
            in_sync: false,
            cause: Some(Cause::SourceChanged),
            unverified: false,
        })
    );
    let scoped = store
        .load_prev(channel, Some(&["A".to_string(), "B".to_string()]))
        .await
        .unwrap();
    assert_eq!(scoped.len(), 1);

    // Outbox: enqueue, coalesce, claim, settle.
    let (q, h) = store
        .enqueue(
            channel,
            &[
                (planned("A", 3), "k3".into(), None),
                (planned("B", 5), "kb".into(), Some("held".into())),
            ],
            run,
            1_000,
        )
        .await
        .unwrap();
    assert_eq!((q, h), (1, 1));
    // A newer desired value replaces the queued one.
    store
        .enqueue(channel, &[(planned("A", 4), "k4".into(), None)], run, 1_000)
        .await
        .unwrap();
    assert_eq!(store.outbox_depth(channel).await.unwrap(), (1, 1));
    // A webhook showing the value being written: that write is landing.
    let shown = [
        (key("A", Field::Stock, "L1"), "4".to_string()),
        (key("A", Field::Stock, "L2"), "4".to_string()),
        (key("B", Field::Stock, "L1"), "9".to_string()),
    ];
    assert_eq!(
        store.queued_values(channel, &shown).await.unwrap(),
        HashSet::from([key("A", Field::Stock, "L1")])
    );
    // Stock lanes claim only stock; the rest lane has none here.
    assert_eq!(
        store
            .claim_in(channel, Lane::Stock, 10, 2_000, None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim_in(channel, Lane::Rest, 10, 2_000, None)
            .await
            .unwrap()
            .is_empty()
    );
    // A push window: queued at 1,000, so not yet by 999, and due by 1,000.
    assert!(
        store
            .claim_queued_before(channel, 10, 2_000, 999)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_queued_before(channel, 10, 2_000, 1_000)
            .await
            .unwrap()
            .len(),
        1
    );
    let claimed = store.claim(channel, 10, 2_000).await.unwrap();
    assert_eq!(claimed.len(), 1, "held rows are not claimed");
    assert_eq!(claimed[0].value, "4");
    assert_eq!(claimed[0].idempotency_key, "k4");
    assert!(matches!(
        claimed[0].change,
        Change::Stock { quantity: 4, .. }
    ));

    // A retry is scheduled later and not claimable before then.
    store
        .settle(
            channel,
            run,
            &[(
                claimed[0].clone(),
                Settled::RetryAt {
                    at: 5_000,
                    error: "503".into(),
                },
            )],
            2_000,
        )
        .await
        .unwrap();
    assert!(store.claim(channel, 10, 4_999).await.unwrap().is_empty());
    assert_eq!(store.next_due(channel).await.unwrap(), Some(5_000));
    let again = store.claim(channel, 10, 5_000).await.unwrap();
    assert_eq!(again[0].attempts, 1);

    // If the value changed while the push was in flight, settling the old one leaves the new.
    store
        .enqueue(channel, &[(planned("A", 6), "k6".into(), None)], run, 5_001)
        .await
        .unwrap();
    store
        .settle(channel, run, &[(again[0].clone(), Settled::Applied)], 5_002)
        .await
        .unwrap();
    let newer = store.claim(channel, 10, 6_000).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].value, "6");

    // Applied: leaves the outbox and records the pushed value.
    store
        .settle(channel, run, &[(newer[0].clone(), Settled::Applied)], 6_001)
        .await
        .unwrap();
    assert_eq!(store.outbox_depth(channel).await.unwrap(), (0, 1));

    // Dead letter: recorded with the reason, the drift is marked write_failed, and the same
    // value is not queued again.
    store
        .enqueue(channel, &[(planned("A", 7), "k7".into(), None)], run, 7_000)
        .await
        .unwrap();
    let row = store.claim(channel, 10, 7_000).await.unwrap().remove(0);
    store
        .settle(
            channel,
            run,
            &[(
                row,
                Settled::Dead {
                    reason: "SKU blocked".into(),
                },
            )],
            7_001,
        )
        .await
        .unwrap();
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "SKU blocked");
    assert!(
        store
            .dead_lettered(channel)
            .await
            .unwrap()
            .contains(&(key("A", Field::Stock, "L1"), "7".to_string()))
    );
    let prev = store.load_prev(channel, None).await.unwrap();
    assert_eq!(prev[&open.key].cause, Some(Cause::WriteFailed));

    let counts = store.push_counts(run, channel).await.unwrap();
    assert_eq!(counts.get("applied"), Some(&2));
    assert_eq!(counts.get("retry"), Some(&1));
    assert_eq!(counts.get("dead"), Some(&1));

    // Closing the difference moves it to the history.
    let closed = TargetRow {
        in_sync: true,
        observed: Some("3".into()),
        cause: None,
        ..open.clone()
    };
    store
        .save_state(channel, &[closed], &prev, 8_000)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM drift_history WHERE channel = $1")
        .bind(channel)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);

    // A write taken as shown: the listing gets the value, the difference closes into the
    // history, the value waits for a read-back until a read clears the mark.
    let offer_key = key("A", Field::Offer, "");
    let open_offer = TargetRow {
        key: offer_key.clone(),
        desired: "13990 NOK".into(),
        observed: Some("12990 NOK".into()),
        in_sync: false,
        cause: Some(Cause::SourceChanged),
    };
    let prev = store.load_prev(channel, None).await.unwrap();
    store
        .save_state(channel, std::slice::from_ref(&open_offer), &prev, 8_100)
        .await
        .unwrap();
    let change = omnisync_sdk::Change::Offer {
        offer: Offer::regular(Money::new(13990, Currency::NOK)),
    };
    store
        .take_as_shown(
            channel,
            &[(offer_key.clone(), "13990 NOK".into(), change)],
            8_200,
        )
        .await
        .unwrap();
    let shown = store
        .load_observed(channel, &["A".to_string()])
        .await
        .unwrap();
    assert_eq!(
        shown["A"].offer,
        Some(Offer::regular(Money::new(13990, Currency::NOK)))
    );
    assert_eq!(shown["A"].stock, BTreeMap::from([("L1".to_string(), 1)]));
    let prev = store.load_prev(channel, None).await.unwrap();
    assert!(prev[&offer_key].in_sync && prev[&offer_key].unverified);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM drift_history WHERE channel = $1")
        .bind(channel)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 2);
    let (waiting, total) = store.unverified(10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(waiting[channel], ["A"]);
    // A webhook carrying another value confirms nothing; one carrying the value taken as
    // shown confirms it, as a read would.
    let other = [(offer_key.clone(), "12990 NOK".to_string())];
    let none = store.confirm_shown(channel, &other).await.unwrap();
    assert!(none.matched.is_empty() && none.writes == 0);
    assert_eq!(store.unverified(10).await.unwrap().1, 1);
    let same = [(offer_key.clone(), "13990 NOK".to_string())];
    let confirmed = store.confirm_shown(channel, &same).await.unwrap();
    assert_eq!(confirmed.matched, HashSet::from([offer_key.clone()]));
    assert_eq!(confirmed.writes, 1);
    // Again: it still matches, but there is no write left to confirm.
    let again = store.confirm_shown(channel, &same).await.unwrap();
    assert_eq!((again.matched.len(), again.writes), (1, 0));
    assert_eq!(store.unverified(10).await.unwrap().1, 0);
    store
        .clear_unverified(channel, Some(&["A".to_string()]))
        .await
        .unwrap();
    assert_eq!(store.unverified(10).await.unwrap().1, 0);
    assert!(!store.load_prev(channel, None).await.unwrap()[&offer_key].unverified);

    // A stock drop reserved before its order arrives: the order takes its units over (with
    // the source stock the drop was first seen at) instead of adding to them.
    let drops = BTreeMap::from([("R".to_string(), 2)]);
    let source = HashMap::from([("R".to_string(), 10)]);
    let made = store
        .reserve_drops(channel, run, &drops, &source, 9_000, 99_000)
        .await
        .unwrap();
    assert_eq!(made, 1);
    let order = |event: &str, quantity| omnisync::reservations::SoldLine {
        channel: channel.to_string(),
        event_id: event.to_string(),
        line: 0,
        sku: "R".to_string(),
        quantity,
    };
    assert_eq!(
        store
            .reserve(&[order("o1", 1)], 9_100, 99_000)
            .await
            .unwrap(),
        1
    );
    let open = |store: Store| async move {
        let mut open: Vec<(i64, Option<i64>)> = store
            .open_reservations(Some(&["R".to_string()]))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.channel == channel)
            .map(|r| (r.quantity, r.source_available))
            .collect();
        open.sort();
        open
    };
    assert_eq!(open(store.clone()).await, [(1, Some(10)), (1, Some(10))]);
    // The second unit's order releases the drop; a redelivery reserves nothing.
    assert_eq!(
        store
            .reserve(&[order("o2", 3)], 9_200, 99_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .reserve(&[order("o2", 3)], 9_300, 99_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(open(store.clone()).await, [(1, Some(10)), (3, Some(10))]);

    store
        .finish_run(run, "ok", "{\"run_id\":1}", 9_000)
        .await
        .unwrap();
    let latest = store.run(None).await.unwrap().unwrap();
    assert_eq!(latest.status, "ok");
    assert!(!store.runs(5).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::open(&url).await.unwrap();
    conformance(store, "shop").await;
    // Reopening runs no migration twice and keeps the data.
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.runs(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_store_conformance() {
    let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!(
            "TEST_POSTGRES_URL not set: PostgreSQL conformance runs in scripts/test-services.sh"
        );
        return;
    };
    let store = Store::open(&url).await.unwrap();
    // A fresh channel name per run keeps reruns on the same database independent.
    let channel = format!("shop-{}", std::process::id());
    conformance(store, &channel).await;
}

#[tokio::test]
async fn refuses_unknown_database_urls() {
    let e = Store::open("mysql://localhost/x").await.unwrap_err();
    assert!(e.to_string().contains("unsupported database URL"));
}
