//! Real time with the simulators' own signed webhooks: a hand edit in the webshop is put
//! back at once; duplicated and reordered deliveries end in the right state; a lost delivery
//! is repaired by the next full reconcile.

mod common;

use common::{Live, eventually, live, settle};
use omnisync::demo::catalog_item;
use omnisync::engine::Scope;
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::sim::delivery::WebhookFaults;
use omnisync_sdk::{Currency, Money, Offer};

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
