//! The `omnisync run` binary and its signals, as systemd sends them: SIGTERM drains and
//! exits 0; a second SIGTERM while draining exits at once, with what was stored kept.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omnisync::demo::World;
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{Fault, SimControl};
use time::OffsetDateTime;

struct Running {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

/// Starts `omnisync run` against the simulators, with a drain deadline far longer than the
/// test waits, so an early exit can only come from the second signal.
fn start(world: &World) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("omnisync.db").display());
    let text = world
        .config_toml(&database, OffsetDateTime::now_utc())
        .unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let daemon = doc["daemon"].as_table_mut().unwrap();
    daemon.insert("drain_timeout_secs".into(), 600.into());
    daemon.insert("reconcile_schedule".into(), "0 0 1 1 *".into());
    let mut http = toml::Table::new();
    http.insert("listen".into(), addr.clone().into());
    daemon.insert("http".into(), http.into());
    let path = dir.path().join("omnisync.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    let config = omnisync::config::Config::load(&path).unwrap();
    world
        .seed_in_sync(&config, 20, OffsetDateTime::now_utc())
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_omnisync"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Running {
        child,
        addr,
        _dir: dir,
    }
}

impl Drop for Running {
    /// A failed test must not leave its daemon running.
    fn drop(&mut self) {
        if self.child.kill().is_ok()
            && let Err(e) = self.child.wait()
        {
            eprintln!("waiting for the killed daemon: {e}");
        }
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Waits (bounded, generously) for the child to exit; its exit code.
async fn exit_code(child: &mut Child) -> Option<i32> {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn eventually_answers(addr: &str, path: &str, want: u16) -> bool {
    for _ in 0..1200 {
        if get(addr, path).await.is_some_and(|(s, _)| s == want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0() {
    let world = World::start(0).await.unwrap();
    let mut d = start(&world);
    assert!(eventually_answers(&d.addr, "/readyz", 200).await);
    signal(&d.child, "TERM");
    assert_eq!(exit_code(&mut d.child).await, Some(0));
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_while_draining_exits_at_once() {
    let world = World::start(0).await.unwrap();
    let mut d = start(&world);
    assert!(eventually_answers(&d.addr, "/readyz", 200).await);
    // From now on the ERP answers nothing for ten minutes; a sale in the webshop makes the
    // daemon reconcile that SKU, and that pass hangs at the ERP read.
    world
        .shopify
        .subscribe(format!("http://{}/webhooks/webshop", d.addr), vec![]);
    world
        .tryton
        .faults()
        .inject(Fault::Delay { ms: 600_000 }, 100);
    assert!(world.shopify.sell(&omnisync::demo::catalog_item(2).sku, 1));
    let mut stuck = false;
    for _ in 0..1200 {
        if world.tryton.faults().pending() < 100 {
            stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(stuck, "the webhook-driven pass never reached the ERP");

    signal(&d.child, "TERM");
    // Draining (the deadline is 600 s): not ready, and webhooks are refused, not stored.
    assert!(eventually_answers(&d.addr, "/readyz", 503).await);
    let stopping = get(&d.addr, "/readyz").await;
    assert_eq!(stopping.map(|(_, b)| b).as_deref(), Some("stopping"));
    let refused = reqwest::Client::new()
        .post(format!("http://{}/webhooks/webshop", d.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // Still draining: only the second signal ends it.
    assert!(d.child.try_wait().unwrap().is_none());
    signal(&d.child, "TERM");
    assert_eq!(exit_code(&mut d.child).await, Some(0));
    world.tryton.faults().clear();
    world.shutdown().await;
}
