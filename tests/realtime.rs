//! Real time with the simulators' own signed webhooks: a hand edit in the webshop is put
//! back at once; duplicated and reordered deliveries end in the right state; a lost delivery
//! is repaired by the next full reconcile. A change notice from the ERP reaches every
//! channel without reading them; what a webhook pass wrote is read back later, and a write
//! that did not take is found then.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Live, eventually, live, live_with, settle};
use omnisync::demo::{DEMO_NOTIFY_SECRET, catalog_item};
use omnisync::engine::{Engine, Scope};
use omnisync::report::RunReport;
use omnisync_sdk::notice::{ChangeNotice, EVENT_ID_HEADER, SIGNATURE_HEADER};
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::sim::delivery::{WebhookAdmin, WebhookFaults};
use omnisync_sdk::{Currency, Money, Offer};

const TARGETS: [&str; 3] = ["webshop", "marketplace", "social"];

/// A dry full pass: does every target show what it should?
async fn converged(engine: &Engine) -> RunReport {
    engine
        .reconcile(&Scope {
            dry_run: true,
            ..Scope::default()
        })
        .await
        .unwrap()
}

/// The finished runs whose scope is `scope`, oldest first.
async fn runs(engine: &Engine, scope: &str) -> Vec<RunReport> {
    let mut out = Vec::new();
    for run in engine.store().runs(200).await.unwrap() {
        if run.scope != scope {
            continue;
        }
        let full = engine.store().run(Some(run.id)).await.unwrap().unwrap();
        if let Some(json) = full.report {
            out.push(serde_json::from_str(&json).unwrap());
        }
    }
    out.reverse();
    out
}

/// The scopes of the latest runs.
async fn scopes(engine: &Engine) -> Vec<String> {
    let runs = engine.store().runs(50).await.unwrap();
    runs.into_iter().map(|r| r.scope).collect()
}

/// Polls an asynchronous check until it holds (bounded: 10 s).
async fn until<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..400 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

fn channel<'a>(r: &'a RunReport, id: &str) -> &'a omnisync::report::ChannelReport {
    r.channels.iter().find(|c| c.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_pass_plans_the_other_channels_from_what_they_showed_and_reads_back_later() {
    let b = common::engine(30).await;
    let sku = catalog_item(4).sku;
    let erp = b.world.tryton.record(&sku).unwrap();
    let social_before = b.world.meta.record(&sku).unwrap().offer;
    let mut offer = erp.offer;
    offer.price = Money::new(erp.offer.price.minor * 11 / 10, erp.offer.price.currency);
    assert!(b.world.tryton.set_offer(&sku, offer));

    // The ERP named the SKU: only the ERP is read; every target is planned from its stored
    // listing and its correction queued; each queue is pushed on its own and the write
    // taken as shown.
    let named = BTreeMap::from([("erp".to_string(), BTreeSet::from([sku.clone()]))]);
    let pass = b
        .engine
        .reconcile(&Scope {
            skus: Some(vec![sku.clone()]),
            named_by: Some(named),
            enqueue_only: true,
            ..Scope::default()
        })
        .await
        .unwrap();
    assert_eq!(pass.scope, "skus=1 webhook");
    assert_eq!(channel(&pass, "erp").records_read, 1);
    for id in TARGETS {
        let c = channel(&pass, id);
        assert_eq!(c.records_read, 0, "{id} was read");
        assert_eq!(c.corrections.queued, 1, "{id}: {:?}", c.corrections);
        assert_eq!(c.corrections.sent, 0, "{id}: {:?}", c.corrections);
        let pushed = b.engine.push_queued(id).await.unwrap();
        assert_eq!((pushed.sent, pushed.applied), (1, 1), "{id}: {pushed:?}");
        assert!(pushed.reread.is_empty(), "{id}: {pushed:?}");
    }
    let dry = converged(&b.engine).await;
    assert!(dry.converged(), "{}", dry.table());
    let (waiting, total) = b.engine.store().unverified(100).await.unwrap();
    assert_eq!(total, 3, "{waiting:?}");

    // The social catalog quietly drops the write before the read-back.
    assert!(b.world.meta.set_offer(&sku, social_before));
    let back = b.engine.read_back_pending(100).await.unwrap().unwrap();
    assert_eq!(back.scope, "skus=1 read-back");
    for id in ["webshop", "marketplace"] {
        let c = channel(&back, id);
        assert_eq!(c.records_read, 1, "{id}");
        assert_eq!(c.corrections.confirmed, 1, "{id}: {:?}", c.corrections);
    }
    // The read finds the write did not take, calls it so, pushes again and reads that back.
    let social = channel(&back, "social");
    assert_eq!(
        social.drift.by_cause.get("write_no_op"),
        Some(&1),
        "{:?}",
        social.drift
    );
    assert_eq!(social.corrections.sent, 1, "{:?}", social.corrections);
    assert_eq!(social.corrections.confirmed, 1, "{:?}", social.corrections);
    assert_eq!(b.engine.store().unverified(100).await.unwrap().1, 0);
    assert!(b.engine.read_back_pending(100).await.unwrap().is_none());
    let dry = converged(&b.engine).await;
    assert!(dry.converged(), "{}", dry.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_change_notice_from_the_erp_reaches_every_channel() {
    let l = live(30).await;
    let sku = catalog_item(7).sku;
    let erp = l.world.tryton.record(&sku).unwrap();
    let central = omnisync::demo::LOCATIONS[2].1;
    let before = erp.stock.get(central).copied().unwrap_or(0);
    assert!(l.world.tryton.set_stock(&sku, central, before + 4));

    let url = format!("http://{}/webhooks/erp", l.daemon.local_addr());
    let body = format!(r#"{{"skus": ["{sku}"]}}"#);
    let client = reqwest::Client::new();
    let post = |signature: String| {
        client
            .post(&url)
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, "erp-change-1")
            .body(body.clone())
            .send()
    };
    // A wrong signature is refused and stores nothing.
    let refused = post(ChangeNotice::sign(b"not-the-secret", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let ok = post(ChangeNotice::sign(
        DEMO_NOTIFY_SECRET.as_bytes(),
        body.as_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    let engine = l.engine.clone();
    assert!(
        until(|| async { converged(&engine).await.converged() }).await,
        "the change did not reach every channel"
    );
    // The notice's pass read the ERP only.
    let all = scopes(&engine).await;
    let first = runs(&engine, "skus=1 webhook")
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no webhook pass among {all:?}"));
    assert_eq!(channel(&first, "erp").records_read, 1);
    for id in TARGETS {
        assert_eq!(channel(&first, id).records_read, 0, "{id} was read");
    }
    settle(&l).await;
    // Once the inbox is quiet, the daemon reads its writes back on its own.
    assert!(
        until(|| async { engine.store().unverified(10).await.unwrap().1 == 0 }).await,
        "the writes were never read back"
    );
    let all = scopes(&engine).await;
    assert!(all.iter().any(|s| s.ends_with("read-back")), "{all:?}");
    l.daemon.shutdown().await;
}

fn price(l: &Live, sku: &str) -> i64 {
    l.world.shopify.record(sku).unwrap().offer.price.minor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_deliveries_end_in_the_right_state() {
    let l = live(30).await;
    let sku = catalog_item(3).sku;
    let desired = price(&l, &sku);
    l.world.shopify.set_webhook_faults(WebhookFaults {
        duplicate_next: 2,
        reorder_next: 2,
        ..WebhookFaults::default()
    });
    // Two hand edits in a row; their deliveries arrive twice and out of order.
    l.world.shopify.set_offer(
        &sku,
        Offer::regular(Money::new(desired - 700, Currency::NOK)),
    );
    l.world.shopify.set_offer(
        &sku,
        Offer::regular(Money::new(desired - 300, Currency::NOK)),
    );
    assert!(eventually(|| price(&l, &sku) == desired).await);
    settle(&l).await;
    // Each delivery was a hint to re-read: the end state is what the ERP says, nothing else
    // is touched, and the stored observation is the newest one.
    assert_eq!(price(&l, &sku), desired);
    let r = l.engine.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());
    l.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_webhook_is_repaired_by_the_next_full_reconcile() {
    let l = live(30).await;
    // Far apart in the catalog, so they are variants of different products (a
    // `products/update` names every variant of its product).
    let (lost, seen) = (catalog_item(2).sku, catalog_item(25).sku);
    let (lost_desired, seen_desired) = (price(&l, &lost), price(&l, &seen));
    l.world.shopify.set_webhook_faults(WebhookFaults {
        drop_next: 1,
        ..WebhookFaults::default()
    });
    l.world.shopify.set_offer(
        &lost,
        Offer::regular(Money::new(lost_desired - 500, Currency::NOK)),
    );
    l.world.shopify.set_offer(
        &seen,
        Offer::regular(Money::new(seen_desired - 500, Currency::NOK)),
    );
    // The delivered edit is put back in real time; the dropped one is not (yet).
    assert!(eventually(|| price(&l, &seen) == seen_desired).await);
    settle(&l).await;
    assert_eq!(price(&l, &lost), lost_desired - 500);
    // The scheduled full reconcile (the safety net) repairs it.
    let r = l.engine.reconcile(&Scope::default()).await.unwrap();
    let shop = r.channels.iter().find(|c| c.id == "webshop").unwrap();
    assert_eq!(
        shop.drift.by_cause.get("channel_edit"),
        Some(&1),
        "{:?}",
        shop.drift
    );
    assert_eq!(price(&l, &lost), lost_desired);
    l.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_push_window_sends_close_changes_in_one_call() {
    // The social catalog collects its corrections for 2 s; the others push at once.
    let l = live_with(30, |toml| {
        toml.replace(
            "[connectors.social]\n",
            "[connectors.social]\npush_window_ms = 2000\n",
        )
    })
    .await;
    // Let the pushers' start-up round (they push what a previous run left) pass.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let social_calls = || l.world.meta.counters().snapshot().write_calls;
    let shop_calls = || l.world.shopify.counters().snapshot().write_calls;
    let (social_before, shop_before) = (social_calls(), shop_calls());

    let url = format!("http://{}/webhooks/erp", l.daemon.local_addr());
    let client = reqwest::Client::new();
    for i in [3, 13, 23] {
        let sku = catalog_item(i).sku;
        let erp = l.world.tryton.record(&sku).unwrap();
        let mut offer = erp.offer;
        offer.price = Money::new(erp.offer.price.minor * 11 / 10, erp.offer.price.currency);
        assert!(l.world.tryton.set_offer(&sku, offer));
        let body = format!(r#"{{"skus": ["{sku}"]}}"#);
        let shop = shop_calls();
        let answer = client
            .post(&url)
            .header(
                SIGNATURE_HEADER,
                ChangeNotice::sign(DEMO_NOTIFY_SECRET.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        // One pass per change: the webshop has it before the next one is made.
        assert!(until(|| async { shop_calls() > shop }).await);
    }
    let engine = l.engine.clone();
    assert!(
        until(|| async { converged(&engine).await.converged() }).await,
        "the changes did not reach every channel"
    );
    // Three passes, one call to the social catalog.
    assert_eq!(social_calls() - social_before, 1);
    assert!(shop_calls() > shop_before);
    l.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_comes_back_as_a_webhook_is_confirmed_without_a_read() {
    let l = live(30).await;
    settle(&l).await;
    let engine = l.engine.clone();
    let last_run = engine.store().runs(1).await.unwrap()[0].id;
    // The webshop's deliveries come a little late, as Shopify's do: after the daemon has
    // taken its write as shown.
    l.world.shopify.set_webhook_faults(WebhookFaults {
        delay_ms: 300,
        ..WebhookFaults::default()
    });
    let sku = catalog_item(9).sku;
    let central = omnisync::demo::LOCATIONS[2].1;
    let on_hand = l.world.tryton.record(&sku).unwrap().stock[central];
    assert!(l.world.tryton.set_stock(&sku, central, on_hand + 3));
    let shop_before = l.world.shopify.record(&sku).unwrap().stock;

    let url = format!("http://{}/webhooks/erp", l.daemon.local_addr());
    let body = format!(r#"{{"skus": ["{sku}"]}}"#);
    let answer = reqwest::Client::new()
        .post(&url)
        .header(
            SIGNATURE_HEADER,
            ChangeNotice::sign(DEMO_NOTIFY_SECRET.as_bytes(), body.as_bytes()),
        )
        .header(EVENT_ID_HEADER, "erp-change-echo")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        eventually(|| l.world.shopify.record(&sku).unwrap().stock != shop_before).await,
        "the webshop never got the new stock"
    );
    // Shopify's `inventory_levels/update` for that write comes back carrying the quantity:
    // it confirms the write as a read-back would.
    settle(&l).await;
    assert!(
        until(|| async {
            let (waiting, _) = engine.store().unverified(10).await.unwrap();
            !waiting.contains_key("webshop")
        })
        .await,
        "the webshop's write was never confirmed"
    );
    // No pass since the notice read the webshop.
    for run in engine.store().runs(50).await.unwrap() {
        if run.id <= last_run {
            continue;
        }
        let Some(json) = engine
            .store()
            .run(Some(run.id))
            .await
            .unwrap()
            .unwrap()
            .report
        else {
            continue;
        };
        let report: RunReport = serde_json::from_str(&json).unwrap();
        let shop = channel(&report, "webshop");
        assert_eq!(
            shop.records_read, 0,
            "run {} ({}) read the webshop",
            run.id, run.scope
        );
    }
    l.daemon.shutdown().await;
}
