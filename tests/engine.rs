//! The engine against the four simulators: dry runs, per-item failures, batch limits,
//! faults during reads and pushes, durability across a restart, scoped passes and guards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use omnisync::config::Config;
use omnisync::demo::{World, catalog_item};
use omnisync::engine::{Engine, Scope};
use omnisync::report::{ChannelReport, RunReport};
use omnisync::store::Store;
use omnisync_sdk::sim::{Fault, SimControl, SimRecord};
use omnisync_sdk::{
    Capabilities, Change, Connector, ConnectorError, Correction, Currency, Money, Offer, Page,
    PushOutcome, Record,
};
use time::OffsetDateTime;

const N: usize = 120;

struct Setup {
    world: World,
    config: Config,
    database: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let world = World::start(0).await.unwrap();
    let database = format!("sqlite://{}", dir.path().join("omnisync.db").display());
    let path = dir.path().join("omnisync.toml");
    let now = OffsetDateTime::now_utc();
    std::fs::write(&path, world.config_toml(&database, now).unwrap()).unwrap();
    let config = Config::load(&path).unwrap();
    world.seed_in_sync(&config, N, now).unwrap();
    Setup {
        world,
        config,
        database,
        _dir: dir,
    }
}

/// An engine after a first pass over the seeded, consistent channels (the steady state a
/// running daemon is in when something changes).
async fn engine(s: &Setup) -> Engine {
    let store = Store::open(&s.database).await.unwrap();
    let e = Engine::new(s.config.clone(), store).unwrap();
    let baseline = e.reconcile(&Scope::default()).await.unwrap();
    assert!(baseline.converged(), "{}", baseline.table());
    e
}

fn channel<'a>(r: &'a RunReport, id: &str) -> &'a ChannelReport {
    r.channels.iter().find(|c| c.id == id).unwrap()
}

fn sku(i: usize) -> String {
    catalog_item(i).sku
}

#[tokio::test]
async fn dry_run_lists_corrections_and_pushes_nothing() {
    let s = setup().await;
    let e = engine(&s).await;
    let r = s.world.shopify.record(&sku(4)).unwrap();
    s.world
        .shopify
        .set_offer(&r.sku, Offer::regular(Money::new(100, Currency::NOK)));
    let writes_before = s.world.shopify.counters().snapshot().write_calls;

    let dry = e
        .reconcile(&Scope {
            dry_run: true,
            ..Scope::default()
        })
        .await
        .unwrap();
    let shop = channel(&dry, "webshop");
    assert_eq!(shop.would_push.len(), 1, "{:?}", shop.would_push);
    assert_eq!(shop.would_push[0].sku, sku(4));
    assert_eq!(shop.would_push[0].field, "offer");
    assert_eq!(shop.would_push[0].observed.as_deref(), Some("100 NOK"));
    assert_eq!(
        s.world.shopify.counters().snapshot().write_calls,
        writes_before
    );
    assert_eq!(
        s.world.shopify.record(&sku(4)).unwrap().offer.price.minor,
        100
    );
    // Nothing was queued either.
    assert_eq!(e.store().outbox_depth("webshop").await.unwrap(), (0, 0));

    let real = e.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(channel(&real, "webshop").corrections.confirmed, 1);
    assert_ne!(
        s.world.shopify.record(&sku(4)).unwrap().offer.price.minor,
        100
    );
}

#[tokio::test]
async fn one_bad_item_is_dead_lettered_and_the_rest_of_the_batch_applied() {
    let s = setup().await;
    let e = engine(&s).await;
    // An ERP item without a price cannot be listed; one without a title fails its create
    // in the social catalog (Meta refuses a create without a name). A normal missing
    // listing in the same batch must still be created.
    let mut nameless = catalog_item(N + 1);
    nameless.title = String::new();
    s.world.tryton.add(nameless.clone());
    assert!(s.world.meta.remove(&sku(9)));

    let r = e.reconcile(&Scope::default()).await.unwrap();
    let social = channel(&r, "social");
    assert_eq!(social.corrections.failed, 1, "{social:?}");
    assert!(
        s.world.meta.record(&sku(9)).is_some(),
        "the good create went through"
    );
    assert!(s.world.meta.record(&nameless.sku).is_none());
    let dead = e.store().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].sku, nameless.sku);
    assert!(!dead[0].reason.is_empty());

    // The next pass does not hammer the channel with the same hopeless value, and reports
    // the difference as a failed write.
    let again = e.reconcile(&Scope::default()).await.unwrap();
    let social = channel(&again, "social");
    assert_eq!(social.corrections.sent, 0);
    assert_eq!(
        social.drift.by_cause.get("write_failed"),
        Some(&1),
        "{:?}",
        social.drift
    );
}

#[tokio::test]
async fn pushes_are_batched_to_each_api_limit() {
    let s = setup().await;
    let e = engine(&s).await;
    // 60 marketplace quantities edited by hand: 60 corrections, 25 per eBay call.
    for i in 0..60 {
        let r = s.world.ebay.record(&sku(i)).unwrap();
        let q = r.stock.values().next().copied().unwrap_or(0);
        s.world
            .ebay
            .set_stock(&r.sku, omnisync_sdk::StockLevel::DEFAULT_LOCATION, q + 3);
    }
    let before = s.world.ebay.counters().snapshot();
    let r = e.reconcile(&Scope::default()).await.unwrap();
    let market = channel(&r, "marketplace");
    assert_eq!(market.corrections.sent, 60);
    assert_eq!(market.corrections.confirmed, 60);
    let after = s.world.ebay.counters().snapshot();
    assert!(after.max_batch_seen <= 25, "{after:?}");
    assert!(after.write_calls - before.write_calls >= 3, "{after:?}");
    assert_eq!(after.items_written - before.items_written, 60);
}

#[tokio::test]
async fn faults_during_reads_are_retried_and_persistent_ones_reported() {
    let s = setup().await;
    let e = engine(&s).await;
    s.world.meta.faults().inject(Fault::MalformedJson, 2);
    s.world.meta.faults().inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        1,
    );
    s.world.ebay.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(0),
        },
        2,
    );
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());

    // A channel that keeps answering garbage is reported, and the others still reconcile.
    s.world.meta.faults().inject(Fault::MalformedJson, 1000);
    let r2 = s.world.shopify.record(&sku(2)).unwrap();
    s.world
        .shopify
        .set_offer(&r2.sku, Offer::regular(Money::new(999, Currency::NOK)));
    let r = e.reconcile(&Scope::default()).await.unwrap();
    let social = channel(&r, "social");
    assert!(
        social
            .error
            .as_deref()
            .unwrap_or("")
            .contains("unreadable JSON"),
        "{social:?}"
    );
    assert_eq!(channel(&r, "webshop").corrections.confirmed, 1);
    s.world.meta.faults().clear();
}

#[tokio::test]
async fn a_failing_source_stops_the_pass_and_nothing_is_pushed() {
    let s = setup().await;
    let e = engine(&s).await;
    s.world.tryton.faults().inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        1000,
    );
    let writes: u64 = [
        s.world.shopify.counters().snapshot().write_calls,
        s.world.ebay.counters().snapshot().write_calls,
        s.world.meta.counters().snapshot().write_calls,
    ]
    .iter()
    .sum();
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(r.status, "failed");
    assert!(
        r.problems.iter().any(|p| p.contains("source read failed")),
        "{:?}",
        r.problems
    );
    let after: u64 = [
        s.world.shopify.counters().snapshot().write_calls,
        s.world.ebay.counters().snapshot().write_calls,
        s.world.meta.counters().snapshot().write_calls,
    ]
    .iter()
    .sum();
    assert_eq!(writes, after);
    s.world.tryton.faults().clear();
}

#[tokio::test]
async fn a_scoped_pass_touches_only_the_named_skus() {
    let s = setup().await;
    let e = engine(&s).await;
    for i in [3, 5] {
        let r = s.world.shopify.record(&sku(i)).unwrap();
        s.world
            .shopify
            .set_offer(&r.sku, Offer::regular(Money::new(500, Currency::NOK)));
    }
    let r = e
        .reconcile(&Scope {
            skus: Some(vec![sku(3)]),
            ..Scope::default()
        })
        .await
        .unwrap();
    assert_eq!(r.scope, "skus=1");
    assert_eq!(channel(&r, "webshop").items_checked, 1);
    assert_ne!(
        s.world.shopify.record(&sku(3)).unwrap().offer.price.minor,
        500
    );
    assert_eq!(
        s.world.shopify.record(&sku(5)).unwrap().offer.price.minor,
        500
    );
}

#[tokio::test]
async fn a_suspicious_price_change_is_held_for_approval() {
    let s = setup().await;
    let e = engine(&s).await;
    // The webshop holds price changes above 60 %; the ERP price triples.
    let item = catalog_item(6);
    s.world.tryton.set_offer(
        &item.sku,
        Offer::regular(Money::new(item.offer.price.minor * 3, Currency::NOK)),
    );
    let shown = s.world.shopify.record(&item.sku).unwrap().offer;
    let r = e.reconcile(&Scope::default()).await.unwrap();
    let shop = channel(&r, "webshop");
    assert_eq!(shop.corrections.held, 1);
    assert_eq!(s.world.shopify.record(&item.sku).unwrap().offer, shown);
    assert_eq!(e.store().outbox_depth("webshop").await.unwrap(), (0, 1));
    let held = e.store().held("webshop").await.unwrap();
    assert!(
        held[0].4.contains("exceeds max_price_change_percent"),
        "{held:?}"
    );
    // Channels without that guard follow the ERP.
    assert_eq!(channel(&r, "marketplace").corrections.confirmed, 1);

    // The hold lasts across passes until an operator approves it.
    e.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(s.world.shopify.record(&item.sku).unwrap().offer, shown);
    assert_eq!(
        e.store()
            .approve("webshop", Some(std::slice::from_ref(&item.sku)), 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(e.drain_due().await.unwrap(), 1);
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());
    assert_ne!(s.world.shopify.record(&item.sku).unwrap().offer, shown);
}

/// What a test switches on a [`Flaky`] connector.
#[derive(Default)]
struct Switches {
    /// Pushes fail while set.
    failing: Arc<AtomicBool>,
    /// It asks for pacing while set.
    paced: Arc<AtomicBool>,
    /// Push calls made.
    calls: Arc<std::sync::atomic::AtomicU64>,
    /// Batches of this many instead of the real connector's limit.
    max_batch: Option<usize>,
    /// A push with a price in it waits while the test holds this for writing.
    offers: tokio::sync::RwLock<()>,
}

/// A real connector behind [`Switches`] (reads pass through).
struct Flaky {
    inner: Arc<dyn Connector>,
    switches: Arc<Switches>,
}

#[async_trait]
impl Connector for Flaky {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        Capabilities {
            max_batch: self.switches.max_batch.unwrap_or(inner.max_batch),
            ..inner
        }
    }
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.inner.healthcheck().await
    }
    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError> {
        self.inner.read_page(cursor).await
    }
    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        self.inner.read_skus(skus).await
    }
    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        self.switches.calls.fetch_add(1, Ordering::SeqCst);
        let _offers = match batch
            .iter()
            .any(|c| matches!(c.change, Change::Offer { .. }))
        {
            true => Some(self.switches.offers.read().await),
            false => None,
        };
        if self.switches.failing.load(Ordering::SeqCst) {
            Err(ConnectorError::transient(
                "push",
                "HTTP 503: upstream unavailable",
            ))
        } else {
            self.inner.push(batch).await
        }
    }
    fn pacing(&self) -> Option<std::time::Duration> {
        self.switches
            .paced
            .load(Ordering::SeqCst)
            .then_some(std::time::Duration::from_secs(30))
    }
}

fn engine_with_flaky_marketplace(s: &Setup, store: Store, failing: Arc<AtomicBool>) -> Engine {
    let switches = Switches {
        failing,
        ..Switches::default()
    };
    engine_with_marketplace(s, store, Arc::new(switches))
}

fn engine_with_marketplace(s: &Setup, store: Store, switches: Arc<Switches>) -> Engine {
    engine_with_switched(s, store, "marketplace", switches)
}

/// An engine whose `channel` connector is wrapped in a [`Flaky`] with `switches`.
fn engine_with_switched(s: &Setup, store: Store, channel: &str, switches: Arc<Switches>) -> Engine {
    let connectors = s
        .config
        .connectors
        .iter()
        .map(|c| {
            let built = omnisync::registry::build(&c.kind, &c.settings).unwrap();
            let conn: Arc<dyn Connector> = if c.id == channel {
                Arc::new(Flaky {
                    inner: built,
                    switches: switches.clone(),
                })
            } else {
                built
            };
            (c.id.clone(), conn)
        })
        .collect();
    Engine::with_connectors(s.config.clone(), store, connectors).unwrap()
}

#[tokio::test]
async fn queued_corrections_survive_a_restart() {
    let s = setup().await;
    let failing = Arc::new(AtomicBool::new(true));
    let e =
        engine_with_flaky_marketplace(&s, Store::open(&s.database).await.unwrap(), failing.clone());
    let item = catalog_item(8);
    s.world
        .ebay
        .set_stock(&item.sku, omnisync_sdk::StockLevel::DEFAULT_LOCATION, 40);

    let r = e.reconcile(&Scope::default()).await.unwrap();
    let market = channel(&r, "marketplace");
    assert_eq!(market.corrections.queued, 1, "{market:?}");
    assert_eq!(market.corrections.failed, 0);
    assert_eq!(market.corrections.retrying, 1);
    drop(e);

    // A new process on the same database finds the correction and pushes it when due.
    failing.store(false, Ordering::SeqCst);
    let e = engine_with_flaky_marketplace(&s, Store::open(&s.database).await.unwrap(), failing);
    let mut sent = 0;
    for _ in 0..100 {
        sent += e.drain_due().await.unwrap();
        if sent > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sent, 1);
    assert_eq!(e.store().outbox_depth("marketplace").await.unwrap(), (0, 0));
    let shown = s.world.ebay.record(&item.sku).unwrap();
    assert_ne!(shown.stock.values().next(), Some(&40));
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());
}

#[tokio::test]
async fn orphans_and_unknown_skus_are_reported_not_touched() {
    let s = setup().await;
    let e = engine(&s).await;
    s.world.shopify.add(SimRecord {
        sku: "NOT-IN-ERP".into(),
        title: "Old stock".into(),
        offer: Offer::regular(Money::new(1000, Currency::NOK)),
        stock: Default::default(),
    });
    let r = e.reconcile(&Scope::default()).await.unwrap();
    let shop = channel(&r, "webshop");
    assert_eq!(shop.drift.orphan, 1);
    assert!(r.converged());
    assert_eq!(
        s.world
            .shopify
            .record("NOT-IN-ERP")
            .unwrap()
            .offer
            .price
            .minor,
        1000
    );
}

#[tokio::test]
async fn a_channel_that_asks_for_pacing_gets_one_call_per_drain_and_none_from_a_pass() {
    let s = setup().await;
    let switches = Arc::new(Switches {
        max_batch: Some(2),
        ..Switches::default()
    });
    let (paced, calls) = (&switches.paced, &switches.calls);
    let store = Store::open(&s.database).await.unwrap();
    let e = engine_with_marketplace(&s, store, switches.clone());
    assert!(e.reconcile(&Scope::default()).await.unwrap().converged());

    // Five stock changes at the source while the marketplace's API asks for pacing.
    paced.store(true, Ordering::SeqCst);
    let central = omnisync::demo::LOCATIONS[2].1;
    for i in 0..5 {
        let item = catalog_item(i);
        assert!(
            s.world
                .tryton
                .set_stock(&item.sku, central, item.stock[central] + 7)
        );
    }
    let before = calls.load(Ordering::SeqCst);
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(channel(&r, "marketplace").corrections.queued, 5);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "the pass left them queued"
    );
    assert_eq!(e.store().outbox_depth("marketplace").await.unwrap().0, 5);

    // One call per drain while paced; the rest in calls of two once it is not.
    assert_eq!(e.push_queued("marketplace").await.unwrap().sent, 2);
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(e.store().outbox_depth("marketplace").await.unwrap().0, 3);
    paced.store(false, Ordering::SeqCst);
    assert_eq!(e.push_queued("marketplace").await.unwrap().sent, 3);
    assert_eq!(calls.load(Ordering::SeqCst), before + 3);
    let after = e.reconcile(&Scope::default()).await.unwrap();
    assert!(after.converged(), "{}", after.table());
}

/// Where a connector keeps stock and price calls apart (Shopify), stock is pushed in a lane
/// of its own: a sale's stock reaches the shop while a price write to it is held up (in
/// production: waiting for the API's cost budget during a repricing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_write_does_not_wait_behind_a_held_up_price_write() {
    let s = setup().await;
    let switches = Arc::new(Switches::default());
    let store = Store::open(&s.database).await.unwrap();
    let e = engine_with_switched(&s, store, "webshop", switches.clone());
    let baseline = e.reconcile(&Scope::default()).await.unwrap();
    assert!(baseline.converged(), "{}", baseline.table());
    assert_eq!(
        e.push_lanes("webshop"),
        [omnisync::outbox::Lane::Stock, omnisync::outbox::Lane::Rest]
    );

    let (priced, stocked) = (catalog_item(3).sku, catalog_item(5).sku);
    let old_price = s.world.shopify.record(&priced).unwrap().offer;
    let erp = s.world.tryton.record(&priced).unwrap().offer;
    assert!(s.world.tryton.set_offer(
        &priced,
        Offer::regular(Money::new(erp.price.minor * 11 / 10, erp.price.currency)),
    ));
    let central = omnisync::demo::LOCATIONS[2].1;
    let on_hand = s.world.tryton.record(&stocked).unwrap().stock[central];
    assert!(s.world.tryton.set_stock(&stocked, central, on_hand + 4));
    let old_stock = s.world.shopify.record(&stocked).unwrap().stock;
    let queued = e
        .reconcile(&Scope {
            skus: Some(vec![priced.clone(), stocked.clone()]),
            enqueue_only: true,
            ..Scope::default()
        })
        .await
        .unwrap();
    let queued = channel(&queued, "webshop").corrections.queued;
    assert!(queued >= 2, "{queued}");

    // Price writes wait; the push of both lanes starts.
    let hold = switches.offers.write().await;
    let world = &s.world;
    let watch = async move {
        while world.shopify.record(&stocked).unwrap().stock == old_stock {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let price_was_held = world.shopify.record(&priced).unwrap().offer == old_price;
        drop(hold);
        price_was_held
    };
    // The limit only keeps a broken lane from hanging the test.
    let (pushed, watched) = tokio::join!(
        e.push_queued("webshop"),
        tokio::time::timeout(std::time::Duration::from_secs(60), watch)
    );
    let price_was_held = watched.expect("the stock write waited behind the held price write");
    assert!(price_was_held, "the price write was not held");
    let pushed = pushed.unwrap();
    assert_eq!(
        (pushed.sent, pushed.applied),
        (queued, queued),
        "{pushed:?}"
    );
    assert_ne!(
        s.world.shopify.record(&catalog_item(3).sku).unwrap().offer,
        old_price
    );
    // The other channels' corrections were queued too: a pass pushes them, and then
    // every channel agrees.
    e.reconcile(&Scope::default()).await.unwrap();
    let r = e.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());
}
