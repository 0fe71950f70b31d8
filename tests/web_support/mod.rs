//! Shared by the web tests (`tests/web.rs`, `tests/browser.rs`): the demo's simulators and
//! config, a store with real runs plus hand-made rows (open drift, a held correction, a
//! dead letter, hostile text), the daemon's HTTP server on 127.0.0.1:0, and a minimal
//! HTTP/1.1 client (no extra dependency).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use omnisync::config::Config;
use omnisync::demo::World;
use omnisync::engine::{Engine, Scope};
use omnisync::store::Store;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A SKU and texts that must come out escaped.
pub const HOSTILE_SKU: &str = "<script>alert('sku')</script>";
/// A dead letter's reason that must come out escaped.
pub const HOSTILE_REASON: &str = "<img src=x onerror=alert(1)> refused";

/// The running pieces.
pub struct Env {
    pub world: World,
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
}

/// The demo's config for `world`, with schedules moved out of the way, plus `extra_http`
/// lines appended to `[daemon.http]`.
pub fn write_config(world: &World, dir: &std::path::Path, extra_http: &str) -> Config {
    let database = format!("sqlite://{}", dir.join("omnisync.db").display());
    let now = OffsetDateTime::now_utc();
    let mut toml = world
        .config_toml(&database, now)
        .unwrap()
        .replace("\"*/5 * * * *\"", "\"0 0 1 1 *\"")
        .replace("\"*/10 * * * *\"", "\"0 0 1 1 *\"");
    if !extra_http.is_empty() {
        toml = toml.replacen(
            "[daemon.outbox]",
            &format!("[daemon.http]\n{extra_http}\n\n[daemon.outbox]"),
            1,
        );
    }
    let path = dir.join("omnisync.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path).unwrap()
}

/// Simulators with `skus` items, a baseline pass, drift injected and `passes` more passes;
/// then the hand-made rows.
pub async fn env(skus: usize, passes: usize, extra_http: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let world = World::start(0).await.unwrap();
    let config = write_config(&world, dir.path(), extra_http);
    world
        .seed_in_sync(&config, skus, OffsetDateTime::now_utc())
        .unwrap();
    let store = Store::open(&config.daemon.database).await.unwrap();
    let engine = Arc::new(Engine::new(config, store).unwrap());
    engine.reconcile(&Scope::default()).await.unwrap();
    world.inject_drift(skus);
    for _ in 0..passes {
        engine.reconcile(&Scope::default()).await.unwrap();
    }
    Env { world, engine, dir }
}

/// Rows the pages must show: open drift (one with a hostile SKU), a held correction, a
/// dead letter with a hostile reason.
pub async fn seed_rows(engine: &Engine) {
    let pool = engine.store().pool();
    let now = omnisync::outbox::now_ms();
    let two_hours_ago = now - 2 * 3_600_000;
    for (sku, field, location, desired, observed, cause) in [
        (
            "JKT-000004",
            "offer",
            "",
            "12990 NOK",
            "11990 NOK",
            "channel_edit",
        ),
        (HOSTILE_SKU, "stock", "oslo", "3", "5", "source_changed"),
    ] {
        sqlx::query(
            "INSERT INTO target_state (channel, sku, field, location, desired, observed, in_sync, cause, drift_since, checked_at) \
             VALUES ('webshop', $1, $2, $3, $4, $5, 0, $6, $7, $8) \
             ON CONFLICT (channel, sku, field, location) DO UPDATE SET desired = excluded.desired, \
             observed = excluded.observed, in_sync = 0, cause = excluded.cause, drift_since = excluded.drift_since",
        )
        .bind(sku)
        .bind(field)
        .bind(location)
        .bind(desired)
        .bind(observed)
        .bind(cause)
        .bind(two_hours_ago)
        .bind(now)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (channel, sku, field, location, value, change, refs, idempotency_key, status, hold_reason, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ('marketplace', 'TEE-000001', 'offer', '', '1 EUR', '{}', '{}', 'k-held-1', 'held', 'price falls by 99.6 % (max_price_change_percent 60)', 0, $1, $1, $1)",
    )
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, created_at) \
         VALUES ('social', 'CAP-000003', 'stock', '', '4', '{}', $1, 5, $2)",
    )
    .bind(HOSTILE_REASON)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` with extra headers, over a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = HashMap::new();
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            chunked |= k == "transfer-encoding" && v.contains("chunked");
            headers.insert(k, v);
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Serves `router` on 127.0.0.1:0 in the background.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}
