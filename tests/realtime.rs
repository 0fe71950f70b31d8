//! Real time with the simulators' own signed webhooks: a hand edit in the webshop is put
//! back at once; duplicated and reordered deliveries end in the right state; a lost delivery
//! is repaired by the next full reconcile.

use std::sync::Arc;
use std::time::Duration;

use omnisync::config::Config;
use omnisync::daemon::Daemon;
use omnisync::demo::{World, catalog_item};
use omnisync::engine::{Engine, Scope};
use omnisync::store::Store;
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::sim::delivery::WebhookFaults;
use omnisync_sdk::{Currency, Money, Offer};
use time::OffsetDateTime;

struct Live {
    world: World,
    engine: Arc<Engine>,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

async fn live() -> Live {
    let dir = tempfile::tempdir().unwrap();
    let world = World::start(0).await.unwrap();
    let database = format!("sqlite://{}", dir.path().join("omnisync.db").display());
    let path = dir.path().join("omnisync.toml");
    let now = OffsetDateTime::now_utc();
    // Scheduled passes would race the test's own steps: schedule them once a year.
    let toml = world
        .config_toml(&database, now)
        .unwrap()
        .replace("\"*/5 * * * *\"", "\"0 0 1 1 *\"")
        .replace("\"*/10 * * * *\"", "\"0 0 1 1 *\"");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    world.seed_in_sync(&config, 30, now).unwrap();
    let engine = Arc::new(Engine::new(config, Store::open(&database).await.unwrap()).unwrap());
    let baseline = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(baseline.converged(), "{}", baseline.table());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = omnisync::daemon::start(engine.clone(), listener).unwrap();
    let url = format!("http://{}/webhooks/webshop", daemon.local_addr());
    world.shopify.subscribe(url, vec![]);
    // The daemon starts with a full pass of its own: let it finish before the tests edit.
    let ready = daemon.readiness().clone();
    assert!(eventually(|| ready.is_ready()).await);
    Live {
        world,
        engine,
        daemon,
        _dir: dir,
    }
}

/// Polls `check` until it holds (bounded), for effects that arrive through webhooks.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Waits until the simulator has sent everything and the daemon has processed it.
async fn settle(l: &Live) {
    assert!(
        l.world
            .shopify
            .wait_webhooks_idle(Duration::from_secs(5))
            .await
    );
    let stats = l.daemon.webhook_stats().clone();
    assert!(
        eventually(|| {
            stats.processed.load(std::sync::atomic::Ordering::SeqCst)
                >= stats.accepted.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await
    );
}

fn price(l: &Live, sku: &str) -> i64 {
    l.world.shopify.record(sku).unwrap().offer.price.minor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_deliveries_end_in_the_right_state() {
    let l = live().await;
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
    let l = live().await;
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
