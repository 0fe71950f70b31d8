//! Webhooks end to end on loopback: the daemon's HTTP server, the durable inbox and the
//! processor that turns deliveries into scoped reconcile passes.
//!
//! The connectors are small in-memory fakes (an ERP source and a webshop target that signs
//! its webhooks with HMAC-SHA256), so these tests depend only on the SDK's traits. Nothing
//! here asserts on timing: waits poll for a state with a generous deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use omnisync::config::Config;
use omnisync::daemon;
use omnisync::engine::{Engine, Scope};
use omnisync::http::{self, HttpState, Readiness};
use omnisync::inbox::{Processor, WebhookStats};
use omnisync::store::Store;
use omnisync_sdk::webhook::{
    Headers, WebhookError, WebhookHandler, WebhookHint, hmac_sha256, hmac_sha256_verify,
};
use omnisync_sdk::{
    Capabilities, Change, Connector, ConnectorError, Correction, Currency, Money, Offer, Page,
    PushOutcome, Record, StockLevel,
};
use sqlx::Row;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

const SHOP_SECRET: &[u8] = b"shop-webhook-secret";
const VERIFY_TOKEN: &str = "let-me-in";
const BODY_LIMIT: usize = 2048;

// ---- a fake connector ------------------------------------------------------------------

/// An in-memory system keyed by SKU. With a secret it takes webhooks signed as
/// `x-fake-signature: hex(HMAC-SHA256(secret, body))`, event id in `x-fake-event-id`, body a
/// JSON [`WebhookHint`].
struct Fake {
    kind: &'static str,
    records: Mutex<BTreeMap<String, Record>>,
    secret: Option<&'static [u8]>,
    gate: Option<Arc<Semaphore>>,
}

impl Fake {
    fn new(kind: &'static str, records: Vec<Record>, secret: Option<&'static [u8]>) -> Fake {
        Fake {
            kind,
            records: Mutex::new(
                records
                    .into_iter()
                    .map(|r| (r.sku.clone().unwrap(), r))
                    .collect(),
            ),
            secret,
            gate: None,
        }
    }

    fn record(&self, sku: &str) -> Record {
        self.records.lock().unwrap().get(sku).cloned().unwrap()
    }

    fn price(&self, sku: &str) -> i64 {
        self.record(sku).offer.unwrap().price.minor
    }

    fn stock(&self, sku: &str) -> i64 {
        self.record(sku).stock.iter().map(|l| l.available).sum()
    }

    fn set_price(&self, sku: &str, minor: i64) {
        let mut records = self.records.lock().unwrap();
        let r = records.get_mut(sku).unwrap();
        r.offer = Some(Offer::regular(Money::new(minor, Currency::EUR)));
    }

    fn set_stock(&self, sku: &str, qty: i64) {
        let mut records = self.records.lock().unwrap();
        let r = records.get_mut(sku).unwrap();
        for l in &mut r.stock {
            l.available = qty;
        }
    }

    fn insert(&self, r: Record) {
        self.records
            .lock()
            .unwrap()
            .insert(r.sku.clone().unwrap(), r);
    }

    async fn pass_gate(&self) {
        if let Some(g) = &self.gate {
            drop(g.acquire().await.unwrap());
        }
    }
}

#[async_trait]
impl Connector for Fake {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: true,
            writes_stock: true,
            creates_listings: false,
            sale_price: false,
            stock_per_location: false,
            compare_and_set: false,
            max_batch: 50,
            max_read_batch: 50,
            stock_lane: false,
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn read_page(&self, _cursor: Option<String>) -> Result<Page, ConnectorError> {
        self.pass_gate().await;
        Ok(Page {
            records: self.records.lock().unwrap().values().cloned().collect(),
            next: None,
        })
    }

    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        self.pass_gate().await;
        let records = self.records.lock().unwrap();
        Ok(skus
            .iter()
            .filter_map(|s| records.get(s).cloned())
            .collect())
    }

    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        let mut records = self.records.lock().unwrap();
        Ok(batch
            .iter()
            .map(|c| {
                let Some(r) = records.get_mut(&c.sku) else {
                    return PushOutcome::Rejected {
                        reason: "no such listing".into(),
                        retryable: false,
                    };
                };
                match &c.change {
                    Change::Offer { offer } => r.offer = Some(*offer),
                    Change::Stock { quantity, .. } => {
                        for l in &mut r.stock {
                            l.available = *quantity;
                        }
                    }
                    Change::Create { .. } => {}
                }
                PushOutcome::Applied
            })
            .collect())
    }

    fn webhooks(&self) -> Option<&dyn WebhookHandler> {
        self.secret.map(|_| self as &dyn WebhookHandler)
    }
}

impl WebhookHandler for Fake {
    fn verify(&self, headers: &Headers, body: &[u8]) -> Result<(), WebhookError> {
        let secret = self
            .secret
            .ok_or_else(|| WebhookError::Unauthorized("no secret".into()))?;
        let sig = headers
            .get("x-fake-signature")
            .ok_or_else(|| WebhookError::Unauthorized("missing x-fake-signature".into()))?;
        let sig = hex::decode(sig)
            .map_err(|_| WebhookError::Unauthorized("signature is not hex".into()))?;
        if hmac_sha256_verify(secret, body, &sig) {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized(
                "signature does not match".into(),
            ))
        }
    }

    fn event_id(&self, headers: &Headers, _body: &[u8]) -> Option<String> {
        headers.get("x-fake-event-id").cloned()
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<Vec<WebhookHint>, WebhookError> {
        serde_json::from_slice::<WebhookHint>(body)
            .map(|h| vec![h])
            .map_err(|e| WebhookError::Malformed(format!("not a hint: {e}")))
    }

    fn handshake(&self, query: &HashMap<String, String>) -> Option<Result<String, WebhookError>> {
        let q = |k: &str| query.get(k).map(String::as_str);
        Some(
            if q("hub.mode") == Some("subscribe") && q("hub.verify_token") == Some(VERIFY_TOKEN) {
                Ok(q("hub.challenge").unwrap_or_default().to_string())
            } else {
                Err(WebhookError::Unauthorized("wrong verify token".into()))
            },
        )
    }
}

fn record(sku: &str, location: &str, price: i64, qty: i64) -> Record {
    Record {
        external_id: format!("L-{sku}"),
        sku: Some(sku.into()),
        title: Some(format!("Item {sku}")),
        offer: Some(Offer::regular(Money::new(price, Currency::EUR))),
        stock: vec![StockLevel::new(location, qty)],
        refs: BTreeMap::from([("variant_id".to_string(), format!("V-{sku}"))]),
        ..Default::default()
    }
}

const CATALOG: [(&str, i64, i64); 3] = [
    ("SKU-1", 10_000, 5),
    ("SKU-2", 20_000, 7),
    ("SKU-3", 30_000, 9),
];

// ---- the environment -------------------------------------------------------------------

struct Env {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    store: Store,
    erp: Arc<Fake>,
    shop: Arc<Fake>,
}

fn config_text(database: &str, http: &str) -> String {
    format!(
        r#"
[daemon]
database = "{database}"
reconcile_schedule = "0 0 1 1 *"
drain_timeout_secs = 1
{http}

[canonical]
currency = "EUR"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
locations = {{ main = "1" }}
[connectors.erp.settings]
base_url = "http://127.0.0.1:9"
database = "shop"
login = "admin"
password = "env:OMNISYNC_TEST_UNUSED"
company = 1
locations = [1]

[connectors.shop]
kind = "ebay"
price = "target"
stock = "target"
currency = "EUR"
stock_from = ["main"]
[connectors.shop.settings]
base_url = "http://127.0.0.1:9"
access_token = "env:OMNISYNC_TEST_UNUSED"
"#
    )
}

/// A store, an engine and two fakes in sync with each other. `gated`: the ERP's reads wait
/// until the test adds a permit to the returned semaphore.
async fn env(gated: bool) -> (Env, Option<Arc<Semaphore>>) {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("omnisync.db").display());
    let path = dir.path().join("omnisync.toml");
    let http = format!(
        "[daemon.http]\nlisten = \"127.0.0.1:0\"\nbody_limit_bytes = {BODY_LIMIT}\ncoalesce_ms = 20"
    );
    std::fs::write(&path, config_text(&database, &http)).unwrap();
    let config = Config::load(&path).unwrap();
    let store = Store::open(&database).await.unwrap();
    let gate = gated.then(|| Arc::new(Semaphore::new(0)));
    let mut erp = Fake::new(
        "tryton",
        CATALOG
            .iter()
            .map(|(s, p, q)| record(s, "1", *p, *q))
            .collect(),
        None,
    );
    erp.gate = gate.clone();
    let erp = Arc::new(erp);
    let shop = Arc::new(Fake::new(
        "ebay",
        CATALOG
            .iter()
            .map(|(s, p, q)| record(s, StockLevel::DEFAULT_LOCATION, *p, *q))
            .collect(),
        Some(SHOP_SECRET),
    ));
    let engine = Engine::with_connectors(
        config,
        store.clone(),
        vec![
            ("erp".to_string(), erp.clone() as Arc<dyn Connector>),
            ("shop".to_string(), shop.clone() as Arc<dyn Connector>),
        ],
    )
    .unwrap();
    (
        Env {
            _dir: dir,
            engine: Arc::new(engine),
            store,
            erp,
            shop,
        },
        gate,
    )
}

/// Only the HTTP server (no processor, no schedules): deliveries stay `pending`.
struct Server {
    addr: SocketAddr,
    stats: Arc<WebhookStats>,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

async fn server(env: &Env) -> Server {
    let stats = Arc::new(WebhookStats::default());
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let router = http::router(HttpState {
        engine: env.engine.clone(),
        stats: stats.clone(),
        readiness: Arc::new(Readiness::new()),
        wake: wake.clone(),
        body_limit: BODY_LIMIT,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(listener, router, stop.clone()));
    Server {
        addr,
        stats,
        wake,
        stop,
    }
}

/// The whole daemon (first full pass, processor, server) on a loopback port.
async fn daemon(env: &Env) -> daemon::Daemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    daemon::start(env.engine.clone(), listener).unwrap()
}

// ---- HTTP on a plain socket ------------------------------------------------------------

/// One HTTP/1.1 request with `Connection: close`; the status and the body of the answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

fn signature(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, body))
}

/// POSTs a delivery to the shop's endpoint, signed, with an event id when given.
async fn deliver(addr: SocketAddr, body: &str, event_id: Option<&str>) -> (u16, String) {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Fake-Signature", signature(SHOP_SECRET, body.as_bytes())),
        ("X-Fake-Topic", "products/update".to_string()),
    ];
    if let Some(id) = event_id {
        headers.push(("X-Fake-Event-Id", id.to_string()));
    }
    request(addr, "POST", "/webhooks/shop", &headers, body.as_bytes()).await
}

// ---- the inbox table -------------------------------------------------------------------

#[derive(Debug)]
struct InboxRecord {
    connector: String,
    event_id: String,
    topic: Option<String>,
    headers: String,
    body: String,
    status: String,
    reason: Option<String>,
    processed_at: Option<i64>,
}

async fn inbox(store: &Store) -> Vec<InboxRecord> {
    sqlx::query(
        "SELECT connector, event_id, topic, headers, body, status, reason, processed_at FROM webhook_inbox ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| InboxRecord {
        connector: r.try_get(0).unwrap(),
        event_id: r.try_get(1).unwrap(),
        topic: r.try_get(2).unwrap(),
        headers: r.try_get(3).unwrap(),
        body: r.try_get(4).unwrap(),
        status: r.try_get(5).unwrap(),
        reason: r.try_get(6).unwrap(),
        processed_at: r.try_get(7).unwrap(),
    })
    .collect()
}

/// Polls until `check` holds (30 s at most; a deadline for a hung test, not a timing claim).
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

async fn wait_settled(store: &Store, n: usize) {
    wait_for("the inbox to be processed", || async {
        let rows = inbox(store).await;
        rows.len() >= n && rows.iter().all(|r| r.status != "pending")
    })
    .await;
}

async fn wait_ready(addr: SocketAddr) {
    wait_for("/readyz to answer 200", || async {
        request(addr, "GET", "/readyz", &[], b"").await.0 == 200
    })
    .await;
}

// ---- the endpoint ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_is_401_and_nothing_is_stored() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let body = r#"{"topic":"products/update","skus":["SKU-1"]}"#;
    let forged = signature(b"not-the-secret", body.as_bytes());
    let (status, _) = request(
        srv.addr,
        "POST",
        "/webhooks/shop",
        &[
            ("X-Fake-Signature", forged),
            ("X-Fake-Event-Id", "e-1".into()),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    // A valid signature over another body is just as bad.
    let (status, _) = request(
        srv.addr,
        "POST",
        "/webhooks/shop",
        &[("X-Fake-Signature", signature(SHOP_SECRET, b"{}"))],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(inbox(&env.store).await.is_empty());
    assert_eq!(srv.stats.snapshot().unauthorized, 2);
    assert_eq!(srv.stats.snapshot().accepted, 0);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_signature_is_401() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let body = br#"{"topic":"products/update","skus":["SKU-1"]}"#;
    let (status, answer) = request(
        srv.addr,
        "POST",
        "/webhooks/shop",
        &[("X-Fake-Event-Id", "e-1".into())],
        body,
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(inbox(&env.store).await.is_empty());
    assert_eq!(srv.stats.snapshot().unauthorized, 1);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_is_413_and_nothing_is_stored() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let filler = "x".repeat(BODY_LIMIT + 100);
    let body = format!(r#"{{"topic":"products/update","skus":["SKU-1"],"note":"{filler}"}}"#);
    let (status, answer) = deliver(srv.addr, &body, Some("big-1")).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("body_limit_bytes"), "{answer}");
    assert!(inbox(&env.store).await.is_empty());
    assert_eq!(srv.stats.snapshot().too_large, 1);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_connector_or_one_without_webhooks_is_404() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let body = br#"{"topic":"products/update"}"#;
    let sig = || vec![("X-Fake-Signature", signature(SHOP_SECRET, body))];
    assert_eq!(
        request(srv.addr, "POST", "/webhooks/nope", &sig(), body)
            .await
            .0,
        404
    );
    // The ERP fake has no webhook support.
    assert_eq!(
        request(srv.addr, "POST", "/webhooks/erp", &sig(), body)
            .await
            .0,
        404
    );
    // 404 comes before the size check.
    let big = vec![b'x'; BODY_LIMIT * 2];
    assert_eq!(
        request(srv.addr, "POST", "/webhooks/nope", &[], &big)
            .await
            .0,
        404
    );
    assert!(inbox(&env.store).await.is_empty());
    assert_eq!(srv.stats.snapshot().not_found, 3);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_event_id_is_stored_once() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let body = r#"{"topic":"products/update","skus":["SKU-1"]}"#;
    assert_eq!(
        deliver(srv.addr, body, Some("evt-42")).await,
        (200, "accepted".into())
    );
    assert_eq!(
        deliver(srv.addr, body, Some("evt-42")).await,
        (200, "duplicate".into())
    );
    // Without an event id, the same body is recognized by its hash.
    let other = r#"{"topic":"products/update","skus":["SKU-2"]}"#;
    assert_eq!(
        deliver(srv.addr, other, None).await,
        (200, "accepted".into())
    );
    assert_eq!(
        deliver(srv.addr, other, None).await,
        (200, "duplicate".into())
    );
    let rows = inbox(&env.store).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].event_id, "evt-42");
    assert!(
        rows[1].event_id.starts_with("sha256:"),
        "{}",
        rows[1].event_id
    );
    let stats = srv.stats.snapshot();
    assert_eq!((stats.accepted, stats.duplicates), (2, 2));
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_body_with_a_valid_signature_is_400_and_kept_as_rejected() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let (status, answer) = deliver(
        srv.addr,
        r#"{"topic": "products/update", "skus": ["#,
        Some("bad-1"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer.contains("malformed"), "{answer}");
    let rows = inbox(&env.store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "rejected");
    assert!(
        rows[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("not a hint"),
        "{:?}",
        rows[0].reason
    );
    assert_eq!(srv.stats.snapshot().rejected, 1);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_delivery_is_in_the_inbox_when_the_answer_arrives() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let body = r#"{"topic":"inventory_levels/update","skus":["SKU-1"]}"#;
    assert_eq!(deliver(srv.addr, body, Some("evt-1")).await.0, 200);
    // Queried right after the answer: the row is committed.
    let rows = inbox(&env.store).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.connector, "shop");
    assert_eq!(row.event_id, "evt-1");
    assert_eq!(row.status, "pending");
    assert_eq!(row.topic.as_deref(), Some("inventory_levels/update"));
    assert_eq!(row.body, body);
    assert_eq!(row.processed_at, None);
    // Headers are kept lower-cased, without the signature.
    let headers: BTreeMap<String, String> = serde_json::from_str(&row.headers).unwrap();
    assert_eq!(
        headers.get("x-fake-topic").map(String::as_str),
        Some("products/update")
    );
    assert_eq!(
        headers.get("x-fake-event-id").map(String::as_str),
        Some("evt-1")
    );
    assert!(!headers.contains_key("x-fake-signature"), "{headers:?}");
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_handshake_is_answered() {
    let (env, _) = env(false).await;
    let srv = server(&env).await;
    let ok = format!(
        "/webhooks/shop?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    );
    assert_eq!(
        request(srv.addr, "GET", &ok, &[], b"").await,
        (200, "1158201444".into())
    );
    let wrong = "/webhooks/shop?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1";
    assert_eq!(request(srv.addr, "GET", wrong, &[], b"").await.0, 403);
    assert_eq!(
        request(srv.addr, "GET", "/webhooks/erp", &[], b"").await.0,
        404
    );
    assert!(inbox(&env.store).await.is_empty());
    srv.stop.cancel();
}

// ---- health and readiness --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_at_once_and_readyz_after_the_first_pass() {
    let (env, gate) = env(true).await;
    let d = daemon(&env).await;
    let addr = d.local_addr();
    assert_eq!(
        request(addr, "GET", "/healthz", &[], b"").await,
        (200, "ok".into())
    );
    // The first pass is held at the ERP read: not ready, and says why.
    let (status, reason) = request(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(status, 503);
    assert!(reason.contains("first reconcile pass"), "{reason}");
    // Deliveries are taken meanwhile: the inbox is durable.
    assert_eq!(
        deliver(
            addr,
            r#"{"topic":"products/update","skus":["SKU-1"]}"#,
            Some("early")
        )
        .await
        .0,
        200
    );
    gate.unwrap().add_permits(1);
    wait_ready(addr).await;
    assert_eq!(
        request(addr, "GET", "/readyz", &[], b"").await,
        (200, "ready".into())
    );
    assert!(d.readiness().is_ready());
    wait_settled(&env.store, 1).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_503_and_the_drain_deadline_ends_a_stuck_pass_losing_nothing() {
    let (env, _gate) = env(true).await;
    let d = daemon(&env).await;
    let addr = d.local_addr();
    // Taken while running; the first pass is stuck at the ERP read (the gate never opens).
    let early = r#"{"topic":"products/update","skus":["SKU-1"]}"#;
    assert_eq!(deliver(addr, early, Some("early")).await.0, 200);
    let ready = d.readiness().clone();
    let stopping = tokio::spawn(d.shutdown());
    assert!(common_eventually(|| ready.is_stopping()).await);
    // While draining, deliveries are refused (the provider retries later) and not stored.
    let (status, body) = deliver(
        addr,
        r#"{"topic":"products/update","skus":["SKU-2"]}"#,
        Some("late"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        request(addr, "GET", "/readyz", &[], b"").await,
        (503, "stopping".into())
    );
    // The stuck pass is abandoned at daemon.drain_timeout_secs (1 s here) and the daemon
    // stops; what was taken in stays pending for the next start.
    stopping.await.unwrap();
    let rows = inbox(&env.store).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].event_id.as_str(), rows[0].status.as_str()),
        ("early", "pending")
    );
}

/// Polls `check` until it holds (bounded).
async fn common_eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

// ---- the processor ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_naming_a_sku_reconciles_that_sku_everywhere() {
    let (env, _) = env(false).await;
    let d = daemon(&env).await;
    wait_ready(d.local_addr()).await;
    // The ERP moves two prices; the webhook names only one of them.
    env.erp.set_price("SKU-1", 12_500);
    env.erp.set_price("SKU-2", 25_000);
    let body = r#"{"topic":"products/update","skus":["SKU-1"]}"#;
    assert_eq!(deliver(d.local_addr(), body, Some("price-1")).await.0, 200);
    wait_settled(&env.store, 1).await;
    // A pass over that SKU read the source and pushed the new price to the target.
    assert_eq!(env.shop.price("SKU-1"), 12_500);
    // The pass was scoped: the other change waits for the next full reconcile.
    assert_eq!(env.shop.price("SKU-2"), 20_000);
    let rows = inbox(&env.store).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].reason.as_deref()),
        ("done", None)
    );
    assert!(rows[0].processed_at.is_some());
    let runs = env.store.runs(10).await.unwrap();
    assert!(
        runs.iter().any(|r| r.scope == "skus=1 webhook"),
        "{:?}",
        runs.iter().map(|r| &r.scope).collect::<Vec<_>>()
    );
    assert_eq!(d.webhook_stats().snapshot().passes, 1);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_and_order_lines_map_to_skus_through_the_bindings() {
    let (env, _) = env(false).await;
    let d = daemon(&env).await;
    let addr = d.local_addr();
    wait_ready(addr).await;

    // A stock edit in the shop, hinted by the shop's own variant id.
    env.shop.set_stock("SKU-3", 99);
    let body = r#"{"topic":"inventory_levels/update","refs":[["variant_id","V-SKU-3"]]}"#;
    assert_eq!(deliver(addr, body, Some("r-1")).await.0, 200);
    wait_settled(&env.store, 1).await;
    assert_eq!(
        env.shop.stock("SKU-3"),
        9,
        "re-read and corrected from the source"
    );

    // An order naming its line by listing id: re-read (reservations come later).
    env.shop.set_price("SKU-2", 1);
    let body = r#"{"topic":"orders/create","sold":[{"sku":null,"reference":["external_id","L-SKU-2"],"quantity":1}]}"#;
    assert_eq!(deliver(addr, body, Some("o-1")).await.0, 200);
    wait_settled(&env.store, 2).await;
    assert_eq!(env.shop.price("SKU-2"), 20_000);

    // An id bound to nothing: settled with the reason, left to the next full reconcile.
    let body = r#"{"topic":"inventory_levels/update","refs":[["variant_id","V-NOPE"]]}"#;
    assert_eq!(deliver(addr, body, Some("r-2")).await.0, 200);
    wait_settled(&env.store, 3).await;

    // A listing bound after the map was loaded is found by reloading it.
    env.erp.insert(record("SKU-4", "1", 40_000, 4));
    env.shop
        .insert(record("SKU-4", StockLevel::DEFAULT_LOCATION, 40_000, 4));
    env.engine.reconcile(&Scope::default()).await.unwrap();
    env.shop.set_price("SKU-4", 2);
    let body = r#"{"topic":"products/update","refs":[["variant_id","V-SKU-4"]]}"#;
    assert_eq!(deliver(addr, body, Some("r-3")).await.0, 200);
    wait_settled(&env.store, 4).await;
    assert_eq!(env.shop.price("SKU-4"), 40_000);

    let rows = inbox(&env.store).await;
    let reasons: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.reason.as_deref()))
        .collect();
    assert_eq!(reasons[0], ("done", None));
    assert_eq!(reasons[1], ("done", None));
    assert_eq!(reasons[2].0, "done");
    assert!(
        reasons[2]
            .1
            .unwrap_or_default()
            .contains("variant_id=V-NOPE"),
        "{reasons:?}"
    );
    assert!(
        reasons[2]
            .1
            .unwrap_or_default()
            .contains("next full reconcile"),
        "{reasons:?}"
    );
    assert_eq!(reasons[3], ("done", None));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_pending_goes_in_one_pass() {
    let (env, _) = env(false).await;
    env.engine.reconcile(&Scope::default()).await.unwrap();
    let srv = server(&env).await;
    for (i, (sku, price, _)) in CATALOG.iter().enumerate() {
        env.erp.set_price(sku, price + 100);
        let body = format!(r#"{{"topic":"products/update","skus":["{sku}"]}}"#);
        assert_eq!(
            deliver(srv.addr, &body, Some(&format!("b-{i}"))).await.0,
            200
        );
    }
    let stats = Arc::new(WebhookStats::default());
    let mut p = Processor::new(
        env.engine.clone(),
        stats.clone(),
        srv.wake.clone(),
        Duration::from_millis(1),
    );
    assert_eq!(p.process_pending().await.unwrap(), 3);
    assert_eq!(stats.snapshot().passes, 1);
    assert_eq!(
        env.store.run(None).await.unwrap().unwrap().scope,
        "skus=3 webhook"
    );
    for (sku, price, _) in CATALOG {
        assert_eq!(env.shop.price(sku), price + 100);
    }
    assert!(inbox(&env.store).await.iter().all(|r| r.status == "done"));
    assert_eq!(p.process_pending().await.unwrap(), 0);
    srv.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_rows_left_by_a_stopped_processor_are_processed_by_the_next() {
    let (env, _) = env(false).await;
    env.engine.reconcile(&Scope::default()).await.unwrap();
    let srv = server(&env).await;
    // A processor runs, then stops (a crash or a restart).
    let stop = CancellationToken::new();
    let stats = Arc::new(WebhookStats::default());
    let first = tokio::spawn(
        Processor::new(
            env.engine.clone(),
            stats.clone(),
            srv.wake.clone(),
            Duration::from_millis(10),
        )
        .run(stop.clone()),
    );
    stop.cancel();
    first.await.unwrap();

    env.erp.set_stock("SKU-2", 3);
    let body = r#"{"topic":"inventory_levels/update","skus":["SKU-2"]}"#;
    assert_eq!(deliver(srv.addr, body, Some("s-1")).await.0, 200);
    let rows = inbox(&env.store).await;
    assert_eq!(rows[0].status, "pending", "nobody processed it");
    assert_eq!(env.shop.stock("SKU-2"), 7);

    // The next processor takes what was left, without a wake.
    let stop = CancellationToken::new();
    let next = tokio::spawn(
        Processor::new(
            env.engine.clone(),
            stats.clone(),
            Arc::new(Notify::new()),
            Duration::from_millis(10),
        )
        .run(stop.clone()),
    );
    wait_settled(&env.store, 1).await;
    assert_eq!(env.shop.stock("SKU-2"), 3);
    assert_eq!(inbox(&env.store).await[0].status, "done");
    stop.cancel();
    next.await.unwrap();
    srv.stop.cancel();
}

// ---- configuration ---------------------------------------------------------------------

#[test]
fn the_http_section_has_defaults_and_checks_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omnisync.toml");
    std::fs::write(&path, config_text("sqlite://x.db", "")).unwrap();
    let config = Config::load(&path).unwrap();
    let http = &config.daemon.http;
    assert_eq!(http.listen, "127.0.0.1:8080");
    assert_eq!(http.body_limit_bytes, 1024 * 1024);
    assert_eq!(http.coalesce_ms, 50);

    std::fs::write(
        &path,
        config_text("sqlite://x.db", "[daemon.http]\nlisten = \"localhost\""),
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("daemon.http.listen"), "{err}");
    assert!(err.contains("127.0.0.1:8080"), "{err}");

    std::fs::write(
        &path,
        config_text("sqlite://x.db", "[daemon.http]\nport = 8080"),
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("daemon.http") && err.contains("port"), "{err}");
}

// ---- the inbox on both backends --------------------------------------------------------

/// The inbox's queries on one backend: insert, redelivery, rejection, claim in id order,
/// settle (plain and with reasons), bindings as the ref map reads them.
async fn inbox_conformance(store: Store, connector: &str) {
    use omnisync::inbox::{InboxStatus, NewDelivery};
    let headers: Headers = [("x-topic", "a"), ("x-hub-signature-256", "sha256=00")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let delivery = |event_id: &'static str, status, reason| NewDelivery {
        connector,
        event_id,
        topic: Some("products/update"),
        received_at: 1_000,
        headers: &headers,
        body: r#"{"topic":"products/update"}"#,
        status,
        reason,
    };
    let a = store
        .inbox_insert(&delivery("a", InboxStatus::Pending, None))
        .await
        .unwrap();
    assert!(a.is_some());
    let again = store
        .inbox_insert(&delivery("a", InboxStatus::Pending, None))
        .await
        .unwrap();
    assert_eq!(again, None, "a redelivery is not stored twice");
    let bad = store
        .inbox_insert(&delivery("bad", InboxStatus::Rejected, Some("not JSON")))
        .await
        .unwrap();
    assert!(bad.is_some());
    let b = store
        .inbox_insert(&delivery("b", InboxStatus::Pending, None))
        .await
        .unwrap();

    let pending: Vec<_> = store
        .inbox_pending(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.connector == connector)
        .collect();
    assert_eq!(
        pending
            .iter()
            .map(|r| r.event_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        pending[0].headers.keys().collect::<Vec<_>>(),
        ["x-topic"],
        "signature headers are not stored"
    );
    // Another connector's delivery, later, comes first when its connector is asked first.
    let erp = format!("{connector}-erp");
    let first = NewDelivery {
        connector: &erp,
        ..delivery("c", InboxStatus::Pending, None)
    };
    store.inbox_insert(&first).await.unwrap().unwrap();
    let ordered: Vec<String> = store
        .inbox_pending_first(std::slice::from_ref(&erp), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.connector.starts_with(connector))
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ordered, ["c", "a", "b"]);
    let limited = store
        .inbox_pending_first(std::slice::from_ref(&erp), 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].event_id, "c");
    let (a, b) = (a.unwrap(), b.unwrap());
    store
        .inbox_settle(
            &[
                (a, InboxStatus::Done, None),
                (b, InboxStatus::Done, Some("nothing to re-read".into())),
            ],
            2_000,
        )
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT event_id, status, reason, processed_at FROM webhook_inbox WHERE connector = $1 ORDER BY id",
    )
    .bind(connector)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let rows: Vec<(String, String, Option<String>, Option<i64>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get(0).unwrap(),
                r.try_get(1).unwrap(),
                r.try_get(2).unwrap(),
                r.try_get(3).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a".to_string(), "done".to_string(), None, Some(2_000)),
            (
                "bad".to_string(),
                "rejected".to_string(),
                Some("not JSON".to_string()),
                None
            ),
            (
                "b".to_string(),
                "done".to_string(),
                Some("nothing to re-read".to_string()),
                Some(2_000)
            ),
        ]
    );

    let observed = HashMap::from([(
        "SKU-1".to_string(),
        omnisync::planner::Observed {
            external_id: "L-1".into(),
            refs: BTreeMap::from([("variant_id".to_string(), "V-1".to_string())]),
            offer: None,
            stock: BTreeMap::new(),
        },
    )]);
    store.save_bindings(connector, &observed, 1).await.unwrap();
    let ids = store.binding_ids(connector).await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        (ids[0].sku.as_str(), ids[0].external_id.as_str()),
        ("SKU-1", "L-1")
    );
    assert_eq!(
        ids[0].refs.get("variant_id").map(String::as_str),
        Some("V-1")
    );

    // A burst, each event delivered twice at once: the deliveries are written in groups
    // (one transaction each), every event is stored exactly once, and every request learns
    // whether its row is new.
    let events: Vec<String> = (0..300).map(|i| format!("burst-{i}")).collect();
    let inserts = events.iter().chain(events.iter()).map(|e| {
        let store = store.clone();
        let headers = headers.clone();
        async move {
            store
                .inbox_insert(&NewDelivery {
                    connector,
                    event_id: e,
                    topic: None,
                    received_at: 2_000,
                    headers: &headers,
                    body: "{}",
                    status: InboxStatus::Pending,
                    reason: None,
                })
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(inserts).await;
    let stored: HashSet<i64> = answers.iter().flatten().copied().collect();
    assert_eq!(stored.len(), 300, "each event stored once");
    assert_eq!(answers.iter().filter(|a| a.is_none()).count(), 300);
    let pending = store.inbox_pending(10_000).await.unwrap();
    let burst = pending
        .iter()
        .filter(|r| r.connector == connector && r.event_id.starts_with("burst-"))
        .count();
    assert_eq!(burst, 300);
    // Leave nothing pending for the next run on the same database.
    let done: Vec<_> = stored
        .into_iter()
        .map(|id| (id, InboxStatus::Done, None))
        .collect();
    store.inbox_settle(&done, 3_000).await.unwrap();
}

#[tokio::test]
async fn sqlite_inbox_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    inbox_conformance(Store::open(&url).await.unwrap(), "shop").await;
}

#[tokio::test]
async fn postgres_inbox_conformance() {
    let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!(
            "TEST_POSTGRES_URL not set: PostgreSQL conformance runs in scripts/test-services.sh"
        );
        return;
    };
    // A fresh connector name per run keeps reruns on the same database independent.
    let connector = format!("shop-{}", std::process::id());
    inbox_conformance(Store::open(&url).await.unwrap(), &connector).await;
}
