//! Orders in flight, end to end: the daemon (HTTP server + inbox) receives the webshop
//! simulator's signed order webhook, reserves the sold unit, and every other channel drops
//! before the ERP books the sale; when the ERP books it, the reservation is released and
//! nothing is subtracted twice. The same for a sale the daemon only sees as a stock drop
//! (no order event).

mod common;

use common::{Live, eventually, live, settle};
use omnisync::demo::{LOCATIONS, World, catalog_item};
use omnisync::engine::Scope;
use omnisync_sdk::StockLevel;
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::sim::delivery::WebhookAdmin;

fn pooled(world: &World, sim: &str, sku: &str) -> i64 {
    let record = match sim {
        "ebay" => world.ebay.record(sku),
        _ => world.meta.record(sku),
    };
    record
        .and_then(|r| r.stock.get(StockLevel::DEFAULT_LOCATION).copied())
        .unwrap_or(-1)
}

/// What a channel showed before a sale.
struct Before {
    sku: String,
    oslo: i64,
    social: i64,
    market: i64,
}

/// Sells one unit in the webshop of an item with stock in the Oslo store (the webshop's first
/// location) and the warehouse, and checks what must follow before the ERP books it: the
/// social catalog and the marketplace drop by one, the webshop is not corrected back up
/// where it sold, and since nothing names the location the unit is held off its other
/// locations too (fail closed), and one reservation of the webshop is open.
async fn sell_one_in_the_webshop(l: &Live) -> Before {
    let world = &l.world;
    let item = (0..40)
        .map(catalog_item)
        .find(|i| i.stock[LOCATIONS[0].1] >= 2 && (4..45).contains(&i.stock[LOCATIONS[2].1]))
        .expect("a seeded item with stock in Oslo and the warehouse");
    let sku = item.sku.clone();
    let before = Before {
        oslo: item.stock[LOCATIONS[0].1],
        social: pooled(world, "meta", &sku),
        market: pooled(world, "ebay", &sku),
        sku,
    };
    assert!(before.social > 0 && before.market > 0);
    let shop_before = world.shopify.record(&before.sku).unwrap().stock;

    assert!(world.shopify.sell(&before.sku, 1));
    assert!(
        eventually(|| pooled(world, "meta", &before.sku) == before.social - 1).await,
        "the social catalog drops before the ERP books the sale"
    );
    // The marketplace shows the warehouse only; the sale names no location, so it is held
    // off every pooled number until the source says where it came from.
    assert!(eventually(|| pooled(world, "ebay", &before.sku) == before.market - 1).await);
    let held_off: std::collections::BTreeMap<String, i64> = shop_before
        .iter()
        .map(|(loc, q)| (loc.clone(), (q - 1).max(0)))
        .collect();
    assert!(
        eventually(|| world.shopify.record(&before.sku).unwrap().stock == held_off).await,
        "{shop_before:?} -> {:?}",
        world.shopify.record(&before.sku).unwrap().stock
    );
    // Let every delivery the sale caused be processed before the ERP moves.
    settle(l).await;
    let open = l.engine.store().open_reservations(None).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].channel.as_str(), open[0].quantity), ("webshop", 1));
    before
}

/// The ERP books the sale in the Oslo store: the reservation is released, nothing is
/// subtracted twice, the warehouse units go back to the marketplace, and all agree.
async fn the_erp_books_it(l: &Live, before: &Before) {
    let (world, engine) = (&l.world, &l.engine);
    assert!(
        world
            .tryton
            .set_stock(&before.sku, LOCATIONS[0].1, before.oslo - 1)
    );
    let r = engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(r.reservations.booked, 1, "{:?}", r.reservations);
    assert!(
        engine
            .store()
            .open_reservations(None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(pooled(world, "meta", &before.sku), before.social - 1);
    assert_eq!(pooled(world, "ebay", &before.sku), before.market);
    let after = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(after.converged(), "{}", after.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_in_one_channel_lowers_the_others_before_the_source_books_it() {
    let l = live(40).await;
    // The webshop's order webhook reaches the daemon and reserves the unit.
    let before = sell_one_in_the_webshop(&l).await;
    the_erp_books_it(&l, &before).await;
    l.daemon.shutdown().await;
    l.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_drop_without_an_order_is_held_off_the_others_until_the_source_books_it() {
    let l = live(40).await;
    // The webshop tells of stock changes, not of orders (as a system without order events):
    // the pass that reads the drop reserves it.
    let url = l.world.shopify.subscriptions()[0].url.clone();
    l.world.shopify.clear_subscriptions();
    l.world
        .shopify
        .subscribe(url, vec!["inventory_levels/update".into()]);
    let before = sell_one_in_the_webshop(&l).await;

    // A full pass changes nothing: the drop is reserved once.
    let again = l.engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(again.reservations.from_drops, 0, "{:?}", again.reservations);
    assert_eq!(
        l.engine
            .store()
            .open_reservations(None)
            .await
            .unwrap()
            .len(),
        1
    );

    the_erp_books_it(&l, &before).await;
    l.daemon.shutdown().await;
    l.world.shutdown().await;
}
