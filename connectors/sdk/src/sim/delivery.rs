//! Outgoing webhooks of a simulator: subscriptions, one delivery queue worked by a
//! background tokio task, bounded retries, rehearsal faults, counters and the
//! `/__sim/webhooks/…` admin routes.
//!
//! The provider-specific part (which headers, how the body is signed, whether the
//! subscriber must pass a verification handshake first) is a [`Provider`]; everything else
//! is the same for every simulator that sends webhooks (Shopify, Meta).
//!
//! - [`Dispatcher::emit`] fans one event out to the subscribers that want its topic. With no
//!   such subscriber it does nothing at all (the body is not even built), so a simulator with
//!   100k records and no subscribers pays nothing.
//! - The worker sends first attempts in emission order, each with the request timeout of
//!   [`DeliveryOptions`]. A non-2xx answer or a transport error is retried by a separate
//!   task up to [`DeliveryOptions::max_retries`] times with doubling backoff, resending the
//!   same body, event id and delivery id (as Shopify does); then it is given up.
//! - [`WebhookFaults`] rehearse an unreliable sender: drop (the next N, or with a
//!   probability), duplicate (the same delivery twice), delay, and reorder (hold one delivery
//!   and send it after the next one; a held delivery is sent anyway once nothing follows
//!   within [`DeliveryOptions::reorder_hold`]).
//! - [`WebhookAdmin`] and [`admin_routes`]: the admin API a simulator mounts next to
//!   [`super::admin_router`] (subscriptions, delivery faults, counters, and selling units).
//!
//! A simulator holds one [`Dispatcher`] with its [`Provider`], calls [`Dispatcher::emit`]
//! when its state changes, implements [`WebhookAdmin`] and merges [`admin_routes`] into its
//! router.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How deliveries are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Retries after a failed first attempt (non-2xx or no answer). Default 3. Shopify
    /// retries 8 times over 4 hours; the simulator keeps it short and bounded.
    pub max_retries: u32,
    /// Wait before the first retry; each further retry waits twice as long. Default 200 ms.
    pub retry_backoff: Duration,
    /// Total time one attempt may take. Default 5 s (Shopify's documented total timeout).
    pub timeout: Duration,
    /// Time to connect. Default 1 s (Shopify's documented connect timeout).
    pub connect_timeout: Duration,
    /// How long a delivery held by the `reorder` fault waits for a next one before it is
    /// sent anyway. Default 1 s.
    pub reorder_hold: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            max_retries: 3,
            retry_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            reorder_hold: Duration::from_secs(1),
        }
    }
}

/// Faults applied to outgoing deliveries, for rehearsals. Counts ("next N") are consumed
/// one per delivery and are deterministic; probabilities use a PRNG seeded with `seed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFaults {
    /// Drop the next N deliveries (never sent, never retried).
    #[serde(default)]
    pub drop_next: u32,
    /// Drop each further delivery with this probability (0.0–1.0).
    #[serde(default)]
    pub drop_probability: f64,
    /// Send the next N deliveries twice (same event id, same delivery id).
    #[serde(default)]
    pub duplicate_next: u32,
    /// Send each further delivery twice with this probability (0.0–1.0).
    #[serde(default)]
    pub duplicate_probability: f64,
    /// Wait this long before sending each delivery.
    #[serde(default)]
    pub delay_ms: u64,
    /// Hold each of the next N deliveries and send it after the one that follows it.
    #[serde(default)]
    pub reorder_next: u32,
    /// Seed of the PRNG behind the probabilities.
    #[serde(default)]
    pub seed: u64,
}

/// Webhook counters, for tests and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Events emitted to at least one subscriber.
    pub emitted: u64,
    /// Deliveries queued (one per event and subscriber, plus duplicates).
    pub queued: u64,
    /// HTTP POST attempts made (first attempts, retries and duplicates).
    pub attempted: u64,
    /// Attempts answered 2xx.
    pub succeeded: u64,
    /// Attempts answered non-2xx or not answered.
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
    /// Deliveries given up after the last retry.
    pub given_up: u64,
    /// Deliveries dropped by a fault.
    pub dropped: u64,
    /// Deliveries sent twice by a fault.
    pub duplicated: u64,
    /// Deliveries held back by the reorder fault.
    pub reordered: u64,
    /// Verification handshakes made with subscribers (providers that have one).
    pub handshakes: u64,
    /// Handshakes the subscriber did not answer correctly.
    pub handshakes_failed: u64,
    /// Deliveries not finished yet (queued, in flight, held or waiting for a retry).
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    emitted: AtomicU64,
    queued: AtomicU64,
    attempted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    given_up: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    handshakes: AtomicU64,
    handshakes_failed: AtomicU64,
    pending: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn done(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WebhookStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStats {
            emitted: get(&self.emitted),
            queued: get(&self.queued),
            attempted: get(&self.attempted),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            retried: get(&self.retried),
            given_up: get(&self.given_up),
            dropped: get(&self.dropped),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            handshakes: get(&self.handshakes),
            handshakes_failed: get(&self.handshakes_failed),
            pending: get(&self.pending),
        }
    }
}

/// One subscription, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Where deliveries are POSTed.
    pub url: String,
    /// Topics (Shopify topics, Meta fields) it receives; empty means all.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// One event, shared by all its deliveries (what a [`Provider`] signs).
#[derive(Debug)]
pub struct OutEvent {
    /// The topic.
    pub topic: String,
    /// The event id (the same for every delivery of the event).
    pub event_id: String,
    /// When it happened, RFC 3339 UTC.
    pub triggered_at: String,
    /// The JSON body, exactly as sent and signed.
    pub body: Bytes,
}

/// What differs between providers: the headers (and signature) of a delivery, and an
/// optional subscription handshake. Implementations usually hold the signing secret, so
/// they need not be `Debug`.
pub trait Provider: Send + Sync + 'static {
    /// The headers of one delivery (besides `Content-Type`), including the signature.
    fn headers(&self, event: &OutEvent, delivery_id: &str) -> Vec<(&'static str, String)>;

    /// The query of a verification request made (as a GET to the subscriber's URL) before
    /// the first delivery; the subscriber must answer 2xx with exactly `challenge` as the
    /// body. `None` for providers without one.
    fn handshake(&self, _challenge: &str) -> Option<Vec<(&'static str, String)>> {
        None
    }
}

#[derive(Debug)]
struct Subscriber {
    url: String,
    topics: Vec<String>,
    verified: AtomicBool,
}

impl Subscriber {
    fn wants(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }
}

#[derive(Debug, Clone)]
struct Job {
    sub: Arc<Subscriber>,
    event: Arc<OutEvent>,
    delivery_id: String,
}

#[derive(Debug, Default)]
struct FaultState {
    faults: WebhookFaults,
    rng: u64,
}

impl FaultState {
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn take(n: &mut u32) -> bool {
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    }

    fn plan(&mut self) -> Plan {
        let drop = Self::take(&mut self.faults.drop_next) || {
            let p = self.faults.drop_probability;
            self.chance(p)
        };
        if drop {
            return Plan {
                drop: true,
                ..Plan::default()
            };
        }
        let duplicate = Self::take(&mut self.faults.duplicate_next) || {
            let p = self.faults.duplicate_probability;
            self.chance(p)
        };
        Plan {
            drop: false,
            duplicate,
            reorder: Self::take(&mut self.faults.reorder_next),
            delay: Duration::from_millis(self.faults.delay_ms),
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    drop: bool,
    duplicate: bool,
    reorder: bool,
    delay: Duration,
}

/// State shared by the dispatcher, its worker and retry tasks.
struct Core<P> {
    provider: P,
    options: DeliveryOptions,
    client: Option<reqwest::Client>,
    counters: Counters,
    faults: Mutex<FaultState>,
    challenges: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Subscriptions, the queue and the worker of one simulator.
pub struct Dispatcher<P> {
    core: Arc<Core<P>>,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    seq: AtomicU64,
    nonce: u64,
}

impl<P> std::fmt::Debug for Dispatcher<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("options", &self.core.options)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> Dispatcher<P> {
    /// A dispatcher with no subscribers. The worker starts with the first subscription
    /// (or [`Dispatcher::start`]), inside a tokio runtime.
    pub fn new(provider: P, options: DeliveryOptions) -> Self {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| tracing::error!(error = %e, "simulator webhook client cannot be built; deliveries will fail"))
            .ok();
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED);
        Dispatcher {
            core: Arc::new(Core {
                provider,
                options,
                client,
                counters: Counters::default(),
                faults: Mutex::new(FaultState::default()),
                challenges: AtomicU64::new(nonce % 1_000_000_000),
            }),
            subscribers: RwLock::new(Vec::new()),
            tx: Mutex::new(None),
            seq: AtomicU64::new(1),
            nonce,
        }
    }

    /// Starts the worker if it is not running (needs a tokio runtime; `false` without one).
    pub fn start(&self) -> bool {
        self.sender().is_some()
    }

    fn sender(&self) -> Option<mpsc::UnboundedSender<Job>> {
        let mut tx = lock(&self.tx);
        if let Some(t) = tx.as_ref().filter(|t| !t.is_closed()) {
            return Some(t.clone());
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (sender, rx) = mpsc::unbounded_channel();
        handle.spawn(work(Arc::clone(&self.core), rx));
        *tx = Some(sender.clone());
        Some(sender)
    }

    /// Adds (or, for a URL already subscribed, replaces) a subscription. Empty topics
    /// means all topics. A `url` that is not an absolute http(s) URL is ignored with a
    /// warning.
    pub fn subscribe(&self, url: String, topics: Vec<String>) {
        if !valid_url(&url) {
            tracing::warn!(url = %url, "ignoring a webhook subscription that is not an absolute http(s) URL");
            return;
        }
        let sub = Arc::new(Subscriber {
            url,
            topics,
            verified: AtomicBool::new(false),
        });
        {
            let mut subs = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
            subs.retain(|s| s.url != sub.url);
            subs.push(sub);
        }
        if !self.start() {
            tracing::warn!(
                "webhook subscription stored, but no tokio runtime is running to deliver to it"
            );
        }
    }

    /// The subscriptions.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| Subscription {
                url: s.url.clone(),
                topics: s.topics.clone(),
            })
            .collect()
    }

    /// Removes every subscription.
    pub fn clear(&self) {
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: WebhookFaults) {
        let mut state = lock(&self.core.faults);
        state.rng = faults.seed;
        state.faults = faults;
    }

    /// The fault settings left (counts decrease as they are used).
    pub fn faults(&self) -> WebhookFaults {
        lock(&self.core.faults).faults.clone()
    }

    /// The counters.
    pub fn stats(&self) -> WebhookStats {
        self.core.counters.snapshot()
    }

    /// Waits until no delivery is pending, up to `timeout`. `true` when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.core.counters.pending.load(Ordering::Relaxed) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether any subscriber wants `topic` (to skip preparing an event nobody receives).
    pub fn wants(&self, topic: &str) -> bool {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s.wants(topic))
    }

    /// Emits one event on `topic` to every subscriber that wants it. `body` builds the
    /// JSON body from the trigger time (RFC 3339); it is only called when some subscriber
    /// wants the topic.
    pub fn emit(&self, topic: &str, body: impl FnOnce(&str) -> Vec<u8>) {
        let subs: Vec<Arc<Subscriber>> = self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.wants(topic))
            .cloned()
            .collect();
        if subs.is_empty() {
            return;
        }
        let Some(tx) = self.sender() else {
            tracing::warn!(topic, "no tokio runtime: webhook not delivered");
            return;
        };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let triggered_at = now_rfc3339();
        let event = Arc::new(OutEvent {
            topic: topic.to_string(),
            event_id: uuid_like(self.nonce, n, 0),
            body: Bytes::from(body(&triggered_at)),
            triggered_at,
        });
        let counters = &self.core.counters;
        bump(&counters.emitted);
        for (i, sub) in subs.into_iter().enumerate() {
            let job = Job {
                sub,
                event: Arc::clone(&event),
                delivery_id: uuid_like(self.nonce ^ 0xD17E_5EED, n, i as u64 + 1),
            };
            bump(&counters.queued);
            bump(&counters.pending);
            if tx.send(job).is_err() {
                counters.done();
            }
        }
    }
}

/// A UUID-shaped id (version 4 layout) from a per-simulator nonce and a sequence number:
/// unique within the simulator's life, different between runs.
fn uuid_like(nonce: u64, n: u64, k: u64) -> String {
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(nonce ^ k.rotate_left(17));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a as u16) & 0x0fff,
        0x8000 | ((k as u16) & 0x3fff),
        n & 0xffff_ffff_ffff
    )
}

/// Now as RFC 3339 UTC with milliseconds.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

async fn work<P: Provider>(core: Arc<Core<P>>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut held: Option<Job> = None;
    loop {
        let next = if held.is_some() {
            match tokio::time::timeout(core.options.reorder_hold, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Some(h) = held.take() {
                        deliver(&core, h).await;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(job) = next else {
            if let Some(h) = held.take() {
                deliver(&core, h).await;
            }
            return;
        };
        let plan = lock(&core.faults).plan();
        if plan.drop {
            bump(&core.counters.dropped);
            core.counters.done();
            continue;
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        if plan.reorder && held.is_none() {
            bump(&core.counters.reordered);
            held = Some(job);
            continue;
        }
        if plan.duplicate {
            bump(&core.counters.duplicated);
            bump(&core.counters.queued);
            bump(&core.counters.pending);
            deliver(&core, job.clone()).await;
        }
        deliver(&core, job).await;
        if let Some(h) = held.take() {
            deliver(&core, h).await;
        }
    }
}

/// First attempt inline (keeps emission order); retries in their own task.
async fn deliver<P: Provider>(core: &Arc<Core<P>>, job: Job) {
    if attempt(core, &job).await {
        core.counters.done();
        return;
    }
    if core.options.max_retries == 0 {
        bump(&core.counters.given_up);
        core.counters.done();
        return;
    }
    let core = Arc::clone(core);
    tokio::spawn(async move {
        let mut wait = core.options.retry_backoff;
        for _ in 0..core.options.max_retries {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
            bump(&core.counters.retried);
            if attempt(&core, &job).await {
                core.counters.done();
                return;
            }
        }
        tracing::warn!(
            topic = %job.event.topic,
            event_id = %job.event.event_id,
            triggered_at = %job.event.triggered_at,
            "simulator gave up a webhook delivery after its retries"
        );
        bump(&core.counters.given_up);
        core.counters.done();
    });
}

async fn attempt<P: Provider>(core: &Core<P>, job: &Job) -> bool {
    let Some(client) = &core.client else {
        bump(&core.counters.failed);
        return false;
    };
    if !job.sub.verified.load(Ordering::Acquire) {
        let challenge = core
            .challenges
            .fetch_add(7919, Ordering::Relaxed)
            .to_string();
        match core.provider.handshake(&challenge) {
            None => job.sub.verified.store(true, Ordering::Release),
            Some(query) => {
                bump(&core.counters.handshakes);
                let answer = client.get(&job.sub.url).query(&query).send().await;
                let ok = match answer {
                    Ok(r) if r.status().is_success() => {
                        r.text().await.is_ok_and(|body| body.trim() == challenge)
                    }
                    Ok(_) => false,
                    Err(e) => {
                        tracing::debug!(error = %e.without_url(), "webhook handshake failed");
                        false
                    }
                };
                if !ok {
                    bump(&core.counters.handshakes_failed);
                    bump(&core.counters.failed);
                    return false;
                }
                job.sub.verified.store(true, Ordering::Release);
            }
        }
    }
    bump(&core.counters.attempted);
    let mut request = client
        .post(&job.sub.url)
        .header("Content-Type", "application/json")
        .body(job.event.body.clone());
    for (name, value) in core.provider.headers(&job.event, &job.delivery_id) {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            bump(&core.counters.succeeded);
            true
        }
        Ok(r) => {
            tracing::debug!(status = %r.status(), topic = %job.event.topic, "webhook delivery refused");
            bump(&core.counters.failed);
            false
        }
        Err(e) => {
            tracing::debug!(error = %e.without_url(), topic = %job.event.topic, "webhook delivery failed");
            bump(&core.counters.failed);
            false
        }
    }
}

/// What the admin routes need from a simulator, and the webhook controls every simulator
/// that sends webhooks offers on top of it (provided methods that delegate to
/// [`WebhookAdmin::webhooks`]). Bring the trait into scope to call them on a simulator.
pub trait WebhookAdmin: Send + Sync + 'static {
    /// The simulator's provider.
    type Provider: Provider;
    /// The simulator's dispatcher.
    fn webhooks(&self) -> &Dispatcher<Self::Provider>;
    /// Sells `quantity` units of `sku` (a customer order) and emits the provider's order
    /// and stock events; `false` (and nothing changes) when it cannot be sold.
    fn sell(&self, sku: &str, quantity: i64) -> bool;

    /// Subscribes `url` to webhooks on `topics` (the provider's topic names; empty = every
    /// topic). Subscribing a URL again replaces its topics. Deliveries start with the next
    /// change; a provider with a verification handshake makes it before the first one. A
    /// `url` that is not an absolute http(s) URL is ignored with a warning.
    fn subscribe(&self, url: String, topics: Vec<String>) {
        self.webhooks().subscribe(url, topics);
    }

    /// The webhook subscriptions.
    fn subscriptions(&self) -> Vec<Subscription> {
        self.webhooks().subscriptions()
    }

    /// Removes every webhook subscription.
    fn clear_subscriptions(&self) {
        self.webhooks().clear();
    }

    /// Replaces the webhook delivery faults (`WebhookFaults::default()` clears them).
    fn set_webhook_faults(&self, faults: WebhookFaults) {
        self.webhooks().set_faults(faults);
    }

    /// The webhook delivery faults still in force (counts go down as they are used).
    fn webhook_faults(&self) -> WebhookFaults {
        self.webhooks().faults()
    }

    /// Webhook delivery counters.
    fn webhook_stats(&self) -> WebhookStats {
        self.webhooks().stats()
    }

    /// Waits until every queued webhook delivery has finished (sent, dropped or given up),
    /// up to `timeout`; `true` when none is pending.
    fn wait_webhooks_idle(&self, timeout: Duration) -> impl Future<Output = bool> + Send {
        self.webhooks().wait_idle(timeout)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SellBody {
    sku: String,
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

/// Whether `url` is an absolute http(s) URL (what a subscription must be).
fn valid_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// The webhook admin API (mounted next to the SDK's `/__sim` admin router, never faulted):
///
/// | call | does |
/// |---|---|
/// | `POST /__sim/webhooks/subscriptions` | subscribe: `{"url": "http://…", "topics": ["…"]}` (empty = all) |
/// | `GET /__sim/webhooks/subscriptions` | list subscriptions |
/// | `DELETE /__sim/webhooks/subscriptions` | remove every subscription |
/// | `POST /__sim/webhooks/faults` | set delivery faults ([`WebhookFaults`]); `{}` clears them |
/// | `GET /__sim/webhooks/stats` | delivery counters ([`WebhookStats`]) |
/// | `POST /__sim/orders` | sell: `{"sku": "…", "quantity": 1}` → 204, or 409 when it cannot be sold |
pub fn admin_routes<S: WebhookAdmin>(sim: Arc<S>) -> Router {
    Router::new()
        .route(
            "/__sim/webhooks/subscriptions",
            post(
                |State(s): State<Arc<S>>, axum::Json(sub): axum::Json<Subscription>| async move {
                    if !valid_url(&sub.url) {
                        return bad_request("url must be an absolute http(s) URL");
                    }
                    s.webhooks().subscribe(sub.url, sub.topics);
                    StatusCode::NO_CONTENT.into_response()
                },
            )
            .get(|State(s): State<Arc<S>>| async move { axum::Json(s.webhooks().subscriptions()) })
            .delete(|State(s): State<Arc<S>>| async move {
                s.webhooks().clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__sim/webhooks/faults",
            post(
                |State(s): State<Arc<S>>, axum::Json(f): axum::Json<WebhookFaults>| async move {
                    let p_ok = |p: f64| (0.0..=1.0).contains(&p);
                    if !p_ok(f.drop_probability) || !p_ok(f.duplicate_probability) {
                        return bad_request("probabilities must be between 0 and 1");
                    }
                    s.webhooks().set_faults(f);
                    StatusCode::NO_CONTENT.into_response()
                },
            ),
        )
        .route(
            "/__sim/webhooks/stats",
            get(|State(s): State<Arc<S>>| async move { axum::Json(s.webhooks().stats()) }),
        )
        .route(
            "/__sim/orders",
            post(
                |State(s): State<Arc<S>>, axum::Json(b): axum::Json<SellBody>| async move {
                    if s.sell(&b.sku, b.quantity) {
                        StatusCode::NO_CONTENT.into_response()
                    } else {
                        (
                            StatusCode::CONFLICT,
                            axum::Json(serde_json::json!({
                                "error": "unknown SKU, or no location holds that many units"
                            })),
                        )
                            .into_response()
                    }
                },
            ),
        )
        .with_state(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_counts_are_deterministic_and_consumed() {
        let mut s = FaultState {
            faults: WebhookFaults {
                drop_next: 2,
                duplicate_next: 1,
                reorder_next: 1,
                ..WebhookFaults::default()
            },
            rng: 0,
        };
        assert!(s.plan().drop);
        assert!(s.plan().drop);
        let p = s.plan();
        assert!(!p.drop && p.duplicate && p.reorder);
        let p = s.plan();
        assert!(!p.drop && !p.duplicate && !p.reorder);
    }

    #[test]
    fn probabilities_follow_the_seed() {
        let run = |seed| {
            let mut s = FaultState {
                faults: WebhookFaults {
                    drop_probability: 0.5,
                    seed,
                    ..WebhookFaults::default()
                },
                rng: seed,
            };
            (0..200).map(|_| s.plan().drop).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let dropped = run(7).iter().filter(|d| **d).count();
        assert!((60..140).contains(&dropped), "{dropped}");
    }

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = uuid_like(1, 1, 0);
        let b = uuid_like(1, 2, 0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
