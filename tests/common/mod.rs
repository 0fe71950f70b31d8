//! A live daemon against the four simulators, for the end-to-end tests that go through
//! webhooks: the demo's config (with its schedules moved out of the way), a consistent
//! catalog, a baseline pass, the daemon's HTTP server on 127.0.0.1:0 with the webshop
//! simulator subscribed to it, and the daemon's own first pass finished.

use std::sync::Arc;
use std::time::Duration;

use omnisync::config::Config;
use omnisync::daemon::Daemon;
use omnisync::demo::World;
use omnisync::engine::{Engine, Scope};
use omnisync::store::Store;
use omnisync_sdk::sim::delivery::WebhookAdmin;
use time::OffsetDateTime;

/// The running pieces.
pub struct Live {
    pub world: World,
    pub engine: Arc<Engine>,
    pub daemon: Daemon,
    _dir: tempfile::TempDir,
}

/// The simulators and an engine over them, after a baseline pass (no daemon).
pub struct Bench {
    pub world: World,
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
}

/// Starts the simulators with `skus` items in sync and runs the baseline pass.
#[allow(dead_code)] // each test binary compiles this module; not all of them use this
pub async fn engine(skus: usize) -> Bench {
    engine_with(skus, |toml| toml).await
}

/// Like [`engine`], with the generated config edited first.
pub async fn engine_with(skus: usize, edit: impl FnOnce(String) -> String) -> Bench {
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
    std::fs::write(&path, edit(toml)).unwrap();
    let config = Config::load(&path).unwrap();
    world.seed_in_sync(&config, skus, now).unwrap();
    let engine = Arc::new(Engine::new(config, Store::open(&database).await.unwrap()).unwrap());
    let baseline = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(baseline.converged(), "{}", baseline.table());
    Bench { world, engine, dir }
}

/// Starts it all with `skus` items.
pub async fn live(skus: usize) -> Live {
    live_with(skus, |toml| toml).await
}

/// Like [`live`], with the generated config edited first.
pub async fn live_with(skus: usize, edit: impl FnOnce(String) -> String) -> Live {
    let Bench { world, engine, dir } = engine_with(skus, edit).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = omnisync::daemon::start(engine.clone(), listener).unwrap();
    let url = format!("http://{}/webhooks/webshop", daemon.local_addr());
    world.shopify.subscribe(url, vec![]);
    let url = format!("http://{}/webhooks/marketplace", daemon.local_addr());
    world.ebay.subscribe(url, vec![]);
    // The daemon starts with a full pass of its own: let it finish first.
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
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Waits until the webshop simulator has sent everything and the daemon processed it.
pub async fn settle(l: &Live) {
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
