//! Pacing pushes by the usage Meta reports: the adapter keeps the latest
//! `X-Business-Use-Case-Usage` of each use case and [`Connector::pacing`] asks the pusher to
//! gather for longer as the `items_batch` budget runs low, against the simulator with a small
//! budget (20 calls an hour).
//!
//! Nothing here waits in real time beyond the adapter's 1 ms batch poll: waits are checked
//! at the instant a reading was seen ([`MetaConnector::pacing_at`]), and the simulator's
//! rate-limit clock is moved forward ([`Simulator::advance_usage_clock`]) instead of
//! sleeping.

mod common;

use common::stock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use omnisync_meta::sim::{self, SimOptions, Simulator};
use omnisync_meta::{BucReading, MetaConnector, connect};
use omnisync_sdk::sim::{SimControl, SimRecord, SimServer};
use omnisync_sdk::{Change, Connector, Correction, Currency, ErrorKind, Money, Offer, PushOutcome};

/// `items_batch` calls the simulated catalog allows per hour.
const BUDGET: u64 = 20;

/// The simulated change rate: one change every 10 ms (100 changes/s).
const CHANGE_EVERY: Duration = Duration::from_millis(10);

fn sku(i: usize) -> String {
    format!("SKU-{i:03}")
}

struct Harness {
    sim: Arc<Simulator>,
    server: SimServer,
    meta: MetaConnector,
}

/// A simulator with [`BUDGET`] batch calls an hour and batches that finish at the first poll,
/// seeded with `items` SKUs, and an adapter with the default pacing except for
/// `max_window_ms`.
async fn harness(items: usize, max_window_ms: Option<u64>) -> Harness {
    let options = SimOptions {
        catalog_batch_calls: BUDGET,
        polls_before_finish: 0,
        ..SimOptions::default()
    };
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(
        (0..items)
            .map(|i| SimRecord {
                sku: sku(i),
                title: format!("Item {i}"),
                offer: Offer::regular(Money::new(10_000, Currency::SEK)),
                stock: BTreeMap::from([("default".to_string(), 0)]),
            })
            .collect(),
    );
    let mut settings = options.settings(&server.base_url());
    settings.batch_poll_interval_ms = 1;
    if let Some(ms) = max_window_ms {
        settings.pacing_max_window_ms = ms;
    }
    let meta = connect(settings).unwrap();
    Harness { sim, server, meta }
}

/// The adapter's latest `catalog_batch` reading.
fn batch_reading(meta: &MetaConnector) -> BucReading {
    meta.usage()
        .into_iter()
        .find(|r| r.kind == "catalog_batch")
        .expect("a catalog_batch reading")
}

/// One `items_batch` call that must be applied; returns the batch reading it brought.
async fn push_one(h: &Harness, n: usize) -> BucReading {
    let outcomes = h.meta.push(&[stock(&sku(n % 5), n as i64)]).await.unwrap();
    assert_eq!(outcomes, vec![PushOutcome::Applied]);
    batch_reading(&h.meta)
}

#[tokio::test]
async fn pacing_starts_past_the_threshold_and_grows_to_the_regain_time() {
    let h = harness(5, None).await;
    assert_eq!(h.meta.pacing(), None, "no reading yet");
    assert!(h.meta.usage().is_empty());
    let max_window = Duration::from_millis(h.meta.settings().pacing_max_window_ms);
    let mut last = Duration::ZERO;
    for call in 1..=BUDGET as usize {
        let reading = push_one(&h, call).await;
        assert_eq!(reading.percent, (call * 5) as f64, "call {call}");
        let wait = h.meta.pacing_at(reading.seen);
        if call <= 10 {
            // Up to 50 % (the default threshold) Meta has room.
            assert_eq!(wait, None, "call {call} at {} %", reading.percent);
            assert_eq!(h.meta.pacing(), None, "call {call}");
            continue;
        }
        let wait = wait.unwrap_or_else(|| panic!("call {call} at {} %", reading.percent));
        assert!(wait > last, "call {call}: {wait:?} after {last:?}");
        if call < BUDGET as usize {
            assert!(wait < max_window, "call {call}: {wait:?}");
        }
        last = wait;
    }
    // Used up: the time to regain access (until the first call leaves the hour), longer
    // than the window.
    let reading = batch_reading(&h.meta);
    assert_eq!(reading.percent, 100.0);
    let regain = reading.regain.expect("estimated_time_to_regain_access");
    assert_eq!(last, regain.max(max_window));
    assert!(last > max_window, "{last:?}");
    assert!(h.meta.pacing().is_some());
    // The status polls report catalog_management, which stays low and hides nothing.
    let management = h
        .meta
        .usage()
        .into_iter()
        .find(|r| r.kind == "catalog_management")
        .expect("a catalog_management reading");
    assert!(management.percent < 50.0, "{management:?}");
    // Pacing told the truth: a call now is refused.
    let e = h.meta.push(&[stock(&sku(0), 99)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled, "{e}");
    assert!(h.meta.pacing().is_some());
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_fresh_reading_under_the_threshold_ends_pacing() {
    let h = harness(5, None).await;
    for call in 1..=15 {
        push_one(&h, call).await;
    }
    let reading = batch_reading(&h.meta);
    assert_eq!(reading.percent, 75.0);
    assert!(h.meta.pacing().is_some());
    // An hour later for Meta: every call has left its rolling window.
    h.sim.advance_usage_clock(Duration::from_secs(3600));
    let reading = push_one(&h, 16).await;
    assert_eq!(reading.percent, 5.0);
    assert_eq!(h.meta.pacing_at(reading.seen), None);
    assert_eq!(h.meta.pacing(), None);
    h.server.shutdown().await;
}

#[tokio::test]
async fn an_old_reading_paces_no_more_once_its_wait_has_passed() {
    let h = harness(5, Some(60_000)).await;
    for call in 1..=15 {
        push_one(&h, call).await;
    }
    // 75 %: half of the 60 s window, counted from the answer that reported it.
    let seen = batch_reading(&h.meta).seen;
    let at = |secs: u64| h.meta.pacing_at(seen + Duration::from_secs(secs));
    assert_eq!(at(0), Some(Duration::from_secs(30)));
    assert_eq!(at(10), Some(Duration::from_secs(20)));
    assert_eq!(at(30), None);
    assert_eq!(at(3600), None);
    // Used up: the regain time holds past the window, then ends too.
    for call in 16..=BUDGET as usize {
        push_one(&h, call).await;
    }
    let reading = batch_reading(&h.meta);
    let regain = reading.regain.expect("estimated_time_to_regain_access");
    let at = |d: Duration| h.meta.pacing_at(reading.seen + d);
    assert_eq!(at(Duration::ZERO), Some(regain));
    assert_eq!(
        at(Duration::from_secs(61)),
        Some(regain - Duration::from_secs(61))
    );
    assert_eq!(at(regain), None);
    h.server.shutdown().await;
}

/// A pusher at 100 changes/s that waits what `pacing()` asks (at least one change interval)
/// before each call and sends what gathered meanwhile, latest value per SKU, over three
/// simulated hours. The window is 10 min for 20 calls an hour: the proportions of the
/// default 60 s for Meta's 200.
#[tokio::test]
async fn a_pusher_that_waits_as_asked_never_runs_out_of_budget() {
    const SKUS: usize = 50;
    let h = harness(SKUS, Some(600_000)).await;
    let hours = 3;
    let end = Duration::from_secs(3600 * hours);
    let mut now = Duration::ZERO;
    // Changes are numbered from 1; change `i` happens at `i * CHANGE_EVERY` and sets the
    // stock of SKU `i % SKUS` to `i`.
    let mut next_change: u64 = 1;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let (mut calls, mut paced, mut peak_after_first_hour) = (0u64, 0u64, 0.0_f64);
    while now < end {
        let wait = h.meta.pacing().unwrap_or_default().max(CHANGE_EVERY);
        if wait > CHANGE_EVERY {
            paced += 1;
        }
        h.sim.advance_usage_clock(wait);
        now += wait;
        let made = (now.as_millis() / CHANGE_EVERY.as_millis()) as u64;
        let first = next_change.max(made.saturating_sub(SKUS as u64 - 1));
        let batch: Vec<Correction> = (first..=made)
            .map(|i| stock(&sku(i as usize % SKUS), i as i64))
            .collect();
        next_change = made + 1;
        if batch.is_empty() {
            continue;
        }
        let outcomes = h
            .meta
            .push(&batch)
            .await
            .unwrap_or_else(|e| panic!("call {} at {now:?}: {e}", calls + 1));
        assert!(outcomes.iter().all(|o| *o == PushOutcome::Applied));
        for c in &batch {
            if let Change::Stock { quantity, .. } = &c.change {
                expected.insert(c.sku.clone(), *quantity);
            }
        }
        calls += 1;
        if now > Duration::from_secs(3600) {
            peak_after_first_hour = peak_after_first_hour.max(batch_reading(&h.meta).percent);
        }
    }
    assert_eq!(h.sim.counters().snapshot().throttled, 0, "never refused");
    assert!(paced > 0, "pacing took over");
    // It kept pushing for the whole time, within the budget of each hour.
    assert!(
        calls > BUDGET && calls <= BUDGET * (hours + 1),
        "{calls} calls"
    );
    assert!(
        peak_after_first_hour < 100.0,
        "usage {peak_after_first_hour} % after the first hour"
    );
    // Every SKU shows its latest change.
    for (sku, quantity) in &expected {
        let record = h.sim.record(sku).unwrap();
        assert_eq!(record.stock.get("default"), Some(quantity), "{sku}");
    }
    assert_eq!(expected.len(), SKUS);
    h.server.shutdown().await;
}
