//! Orders in flight, end to end: the daemon (HTTP server + inbox) receives the webshop
//! simulator's signed order webhook, reserves the sold unit, and every other channel drops
//! before the ERP books the sale; when the ERP books it, the reservation is released and
//! nothing is subtracted twice.

mod common;

use common::{eventually, live, settle};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_in_one_channel_lowers_the_others_before_the_source_books_it() {
    let l = live(40).await;
    let (world, engine) = (&l.world, &l.engine);

    // An item with stock in the Oslo store (the webshop's first location).
    let item = (0..40)
        .map(catalog_item)
        .find(|i| i.stock[LOCATIONS[0].1] >= 2 && (4..45).contains(&i.stock[LOCATIONS[2].1]))
        .expect("a seeded item with stock in Oslo and the warehouse");
    let social_before = pooled(world, "meta", &item.sku);
    let market_before = pooled(world, "ebay", &item.sku);
    assert!(social_before > 0 && market_before > 0);
    let shop_before = world.shopify.record(&item.sku).unwrap().stock;

    // The webshop sells one unit: its order webhook reaches the daemon.
    assert!(world.shopify.sell(&item.sku, 1));
    assert!(
        eventually(|| pooled(world, "meta", &item.sku) == social_before - 1).await,
        "the social catalog drops before the ERP books the sale"
    );
    // The marketplace shows the warehouse only; the order names no location, so it is held
    // off every pooled number until the source says where it came from.
    assert!(eventually(|| pooled(world, "ebay", &item.sku) == market_before - 1).await);
    // The selling channel is not corrected back up where it sold, and since the order names
    // no location, the unit is held off its other locations too (fail closed).
    let held_off: std::collections::BTreeMap<String, i64> = shop_before
        .iter()
        .map(|(loc, q)| (loc.clone(), (q - 1).max(0)))
        .collect();
    assert!(
        eventually(|| world.shopify.record(&item.sku).unwrap().stock == held_off).await,
        "{:?} -> {:?}",
        shop_before,
        world.shopify.record(&item.sku).unwrap().stock
    );
    let open = engine.store().open_reservations(None).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].channel, "webshop");
    assert_eq!(open[0].quantity, 1);

    // Let every delivery the sale caused be processed before the ERP moves.
    settle(&l).await;

    // The ERP books the sale in the Oslo store: the reservation is released, nothing is
    // subtracted twice, and the warehouse units go back to the marketplace.
    let oslo = item.stock[LOCATIONS[0].1];
    assert!(world.tryton.set_stock(&item.sku, LOCATIONS[0].1, oslo - 1));
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
    assert_eq!(pooled(world, "meta", &item.sku), social_before - 1);
    assert_eq!(pooled(world, "ebay", &item.sku), market_before);
    let after = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(after.converged(), "{}", after.table());

    l.daemon.shutdown().await;
    l.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_drop_without_an_order_is_held_off_the_others_until_the_source_books_it() {
    let l = live(40).await;
    let (world, engine) = (&l.world, &l.engine);
    // The webshop tells of stock changes, not of orders (as a system without order events).
    let url = world.shopify.subscriptions()[0].url.clone();
    world.shopify.clear_subscriptions();
    world
        .shopify
        .subscribe(url, vec!["inventory_levels/update".into()]);

    let item = (0..40)
        .map(catalog_item)
        .find(|i| i.stock[LOCATIONS[0].1] >= 2 && (4..45).contains(&i.stock[LOCATIONS[2].1]))
        .expect("a seeded item with stock in Oslo and the warehouse");
    let social_before = pooled(world, "meta", &item.sku);
    let market_before = pooled(world, "ebay", &item.sku);
    let shop_before = world.shopify.record(&item.sku).unwrap().stock;

    // A sale in the webshop: only its stock level changes.
    assert!(world.shopify.sell(&item.sku, 1));
    assert!(
        eventually(|| pooled(world, "meta", &item.sku) == social_before - 1).await,
        "the social catalog drops before the ERP books the sale"
    );
    assert!(eventually(|| pooled(world, "ebay", &item.sku) == market_before - 1).await);
    settle(&l).await;
    // The webshop is not pushed back up where it sold (and holds the unit off its other
    // locations, as for an order that names none).
    let held_off: std::collections::BTreeMap<String, i64> = shop_before
        .iter()
        .map(|(loc, q)| (loc.clone(), (q - 1).max(0)))
        .collect();
    assert!(
        eventually(|| world.shopify.record(&item.sku).unwrap().stock == held_off).await,
        "{shop_before:?} -> {:?}",
        world.shopify.record(&item.sku).unwrap().stock
    );
    let open = engine.store().open_reservations(None).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].channel.as_str(), open[0].quantity), ("webshop", 1));

    // A full pass changes nothing: the drop is reserved once.
    let again = engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(again.reservations.from_drops, 0, "{:?}", again.reservations);
    assert_eq!(
        engine.store().open_reservations(None).await.unwrap().len(),
        1
    );

    // The ERP books the sale: released, and everything agrees at the new level.
    let oslo = item.stock[LOCATIONS[0].1];
    assert!(world.tryton.set_stock(&item.sku, LOCATIONS[0].1, oslo - 1));
    let r = engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(r.reservations.booked, 1, "{:?}", r.reservations);
    assert_eq!(pooled(world, "meta", &item.sku), social_before - 1);
    assert_eq!(pooled(world, "ebay", &item.sku), market_before);
    let after = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(after.converged(), "{}", after.table());

    l.daemon.shutdown().await;
    l.world.shutdown().await;
}
