//! Pushing through the adapter against the simulator: batches larger than the API's input
//! limit, per-item outcomes (rejections, stale compare-and-set), idempotent replays, and
//! prices grouped per product.

mod common;

use common::{Harness, catalog, loc, nok, offer_fix, read, read_all, stock_fix};
use omnisync_sdk::sim::SimControl;
use std::time::Duration;

use omnisync_sdk::{Change, Connector, Correction, Currency, ErrorKind, Money, Offer, PushOutcome};
use omnisync_shopify::mapping::REF_INVENTORY_ITEM_ID;
use omnisync_shopify::sim::SimOptions;

#[tokio::test]
async fn stock_push_beyond_one_batch_stays_within_the_input_limit() {
    let h = Harness::new(SimOptions::default(), catalog(300)).await;
    let c = h.connector();
    let (records, _) = read_all(&c).await;
    let max = c.capabilities().max_batch;
    assert_eq!(max, 250);
    // 600 corrections: 300 variants × locations 1 and 2.
    let fixes: Vec<Correction> = records
        .iter()
        .flat_map(|r| {
            [
                stock_fix(r, &loc(1), 40, None),
                stock_fix(r, &loc(2), 41, None),
            ]
        })
        .collect();
    // As the daemon does: batches of max_batch.
    for batch in fixes.chunks(max) {
        let outcomes = c.push(batch).await.expect("push");
        assert_eq!(outcomes.len(), batch.len());
        assert!(
            outcomes.iter().all(|o| *o == PushOutcome::Applied),
            "{outcomes:?}"
        );
    }
    let stats = h.sim.counters().snapshot();
    assert!(stats.max_batch_seen <= 250, "{stats:?}");
    assert_eq!(stats.items_written, 600);
    assert!(
        h.sim
            .records()
            .iter()
            .all(|r| r.stock[&loc(1)] == 40 && r.stock[&loc(2)] == 41)
    );
}

#[tokio::test]
async fn one_oversized_push_is_split_by_the_connector() {
    let h = Harness::new(SimOptions::default(), catalog(300)).await;
    let c = h.connector();
    let (records, _) = read_all(&c).await;
    let fixes: Vec<Correction> = records
        .iter()
        .map(|r| stock_fix(r, &loc(1), 9, None))
        .collect();
    let outcomes = c.push(&fixes).await.expect("push");
    assert!(outcomes.iter().all(|o| *o == PushOutcome::Applied));
    let stats = h.sim.counters().snapshot();
    assert_eq!(stats.write_calls, 2);
    assert!(stats.max_batch_seen <= 250);
}

#[tokio::test]
async fn price_push_groups_by_product_and_changes_state() {
    let h = Harness::new(SimOptions::default(), catalog(300)).await;
    let c = h.connector();
    let (records, _) = read_all(&c).await;
    let fixes: Vec<Correction> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let offer = if i % 2 == 0 {
                Offer {
                    price: nok(20_000),
                    sale: Some(nok(15_000)),
                }
            } else {
                Offer::regular(nok(19_990))
            };
            offer_fix(r, offer)
        })
        .collect();
    for batch in fixes.chunks(c.capabilities().max_batch) {
        let outcomes = c.push(batch).await.expect("push");
        assert!(
            outcomes.iter().all(|o| *o == PushOutcome::Applied),
            "{outcomes:?}"
        );
    }
    let stats = h.sim.counters().snapshot();
    assert_eq!(stats.items_written, 300);
    assert!(
        stats.max_batch_seen <= 3,
        "one mutation per product of 1–3 variants"
    );
    // 300 variants in 150 products: 25 aliased mutations per request → 6 requests' worth.
    let after = read(&c, &["SKU-00000", "SKU-00001"]).await;
    assert_eq!(
        after[0].offer,
        Some(Offer {
            price: nok(20_000),
            sale: Some(nok(15_000))
        })
    );
    assert_eq!(after[1].offer, Some(Offer::regular(nok(19_990))));
    assert_eq!(h.record("SKU-00001").offer, Offer::regular(nok(19_990)));
}

#[tokio::test]
async fn one_bad_item_does_not_sink_the_others() {
    let h = Harness::new(SimOptions::default(), catalog(10)).await;
    let c = h.connector();
    let r = read(
        &c,
        &[
            "SKU-00000",
            "SKU-00001",
            "SKU-00002",
            "SKU-00003",
            "SKU-00004",
        ],
    )
    .await;
    let mut unknown_item = stock_fix(&r[2], &loc(1), 3, None);
    unknown_item.refs.insert(
        REF_INVENTORY_ITEM_ID.into(),
        "gid://shopify/InventoryItem/1".into(),
    );
    let batch = vec![
        stock_fix(&r[0], &loc(1), 11, None),          // applied
        stock_fix(&r[1], &loc(3), 12, None),          // SKU-00001 is not stocked at location 3
        unknown_item,                                 // unknown inventory item
        stock_fix(&r[3], &loc(1), 13, Some(99)),      // stale compare-and-set
        stock_fix(&r[4], &loc(1), 14, Some(4)),       // compare-and-set that holds (4 % 7)
        stock_fix(&r[0], &loc(9), 1, None),           // not a location of this shop
        stock_fix(&r[0], "oslo-store", 1, None),      // not a location gid at all
        offer_fix(&r[1], Offer::regular(nok(-100))),  // negative price
        offer_fix(&r[2], Offer::regular(nok(5_000))), // applied
        offer_fix(&r[3], Offer::regular(Money::new(5_000, Currency::SEK))), // wrong currency
        Correction {
            change: Change::Create {
                title: None,
                offer: Offer::regular(nok(1)),
                stock: Default::default(),
            },
            external_id: None,
            ..offer_fix(&r[4], Offer::regular(nok(1)))
        },
    ];
    let outcomes = c.push(&batch).await.expect("push");
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(outcomes[0], PushOutcome::Applied);
    let rejected = |o: &PushOutcome, text: &str| matches!(o, PushOutcome::Rejected { reason, retryable: false } if reason.contains(text));
    assert!(
        rejected(&outcomes[1], "ITEM_NOT_STOCKED_AT_LOCATION"),
        "{:?}",
        outcomes[1]
    );
    assert!(
        rejected(&outcomes[2], "INVALID_INVENTORY_ITEM"),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[3], PushOutcome::Stale { current: None });
    assert_eq!(outcomes[4], PushOutcome::Applied);
    assert!(
        rejected(&outcomes[5], "INVALID_LOCATION"),
        "{:?}",
        outcomes[5]
    );
    assert!(rejected(&outcomes[6], "location gid"), "{:?}", outcomes[6]);
    assert!(
        rejected(&outcomes[7], "GREATER_THAN_OR_EQUAL_TO"),
        "{:?}",
        outcomes[7]
    );
    assert_eq!(outcomes[8], PushOutcome::Applied);
    assert!(rejected(&outcomes[9], "SEK"), "{:?}", outcomes[9]);
    assert!(
        rejected(&outcomes[10], "not supported"),
        "{:?}",
        outcomes[10]
    );

    assert_eq!(h.record("SKU-00000").stock[&loc(1)], 11);
    assert_eq!(
        h.record("SKU-00003").stock[&loc(1)],
        3,
        "stale write not applied"
    );
    assert_eq!(h.record("SKU-00004").stock[&loc(1)], 14);
    assert_eq!(h.record("SKU-00002").offer, Offer::regular(nok(5_000)));
    assert_eq!(h.record("SKU-00001").offer, Offer::regular(nok(10_010)));
}

#[tokio::test]
async fn a_repeated_stock_push_is_replayed_not_reapplied() {
    let h = Harness::new(SimOptions::default(), catalog(3)).await;
    let c = h.connector();
    let r = read(&c, &["SKU-00001"]).await;
    // Compare-and-set from the observed 1 to 20.
    let batch = vec![stock_fix(&r[0], &loc(1), 20, Some(1))];
    assert_eq!(
        c.push(&batch).await.expect("push"),
        vec![PushOutcome::Applied]
    );
    let writes = h.sim.counters().snapshot().write_calls;
    // The daemon retries after a lost answer: same request, same key → Shopify replays the
    // first answer instead of reporting the compare as stale.
    assert_eq!(
        c.push(&batch).await.expect("retry"),
        vec![PushOutcome::Applied]
    );
    assert_eq!(h.sim.counters().snapshot().write_calls, writes);
    // Someone edits the shop; a new compare against the old value is stale.
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 7));
    let again = vec![stock_fix(&r[0], &loc(1), 21, Some(20))];
    assert_eq!(
        c.push(&again).await.expect("push"),
        vec![PushOutcome::Stale { current: None }]
    );
    assert_eq!(h.record("SKU-00001").stock[&loc(1)], 7);
}

#[tokio::test]
async fn the_2026_01_version_works_too() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    let c = h.connector_with(|s| s.api_version = "2026-01".into());
    let r = read(&c, &["SKU-00000"]).await;
    let outcomes = c
        .push(&[
            stock_fix(&r[0], &loc(2), 5, Some(0)),
            offer_fix(&r[0], Offer::regular(nok(777))),
        ])
        .await
        .expect("push");
    assert_eq!(outcomes, vec![PushOutcome::Applied, PushOutcome::Applied]);
    assert_eq!(h.record("SKU-00000").stock[&loc(2)], 5);
}

/// Stock has first claim on the cost bucket: a price write leaves `stock_reserve_percent`
/// of it to stock writes and reads (and is refused, without a request, rather than wait
/// past `max_cost_wait_secs`), a stock write takes what is there; while the bucket is below
/// half, stock collects for `stock_window_ms` before its next call.
#[tokio::test]
async fn stock_has_first_claim_on_the_cost_bucket() {
    // A bucket that barely refills, so what is available does not depend on test speed.
    let options = SimOptions {
        bucket_size: 100.0,
        restore_rate: 0.01,
        ..SimOptions::default()
    };
    let h = Harness::new(options, catalog(10)).await;
    let c = h.connector_with(|s| {
        s.stock_reserve_percent = 40;
        s.stock_window_ms = 80;
    });
    assert_eq!(
        c.stock_window(),
        Duration::ZERO,
        "nothing known of the bucket"
    );
    // 2 + 3 × 14 = 44 points: 56 left.
    let records = read(&c, &["SKU-00000", "SKU-00001", "SKU-00002"]).await;
    assert_eq!(c.stock_window(), Duration::ZERO, "the bucket is above half");

    // Prices go while they leave 40 points; then the next is refused before it is sent.
    let mut applied = 0;
    let refused = loop {
        assert!(applied < 5, "price writes never stopped at the reserve");
        let price = nok(10_000 + applied * 100);
        let fix = offer_fix(&records[(applied % 2) as usize], Offer::regular(price));
        let requests = h.sim.counters().snapshot().requests;
        match c.push(&[fix]).await {
            Ok(outcomes) => {
                assert_eq!(outcomes, [PushOutcome::Applied]);
                applied += 1;
            }
            Err(e) => {
                assert_eq!(h.sim.counters().snapshot().requests, requests);
                break e;
            }
        }
    };
    assert!(applied >= 1);
    assert_eq!(refused.kind, ErrorKind::Throttled, "{refused}");
    assert!(refused.to_string().contains("stock reserve"), "{refused}");

    // Stock takes from the reserve.
    let stock = stock_fix(&records[2], &loc(1), 7, None);
    assert_eq!(c.push(&[stock]).await.unwrap(), [PushOutcome::Applied]);
    assert_eq!(h.record("SKU-00002").stock[&loc(1)], 7);
    assert_eq!(h.sim.counters().snapshot().throttled, 0);
    // Below half now: stock writes collect before the next call.
    assert_eq!(c.stock_window(), Duration::from_millis(80));
}
