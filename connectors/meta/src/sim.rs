//! A loopback simulator of the Graph API calls the Meta connector makes.
//!
//! It serves, under `/{version}/{catalog_id}`:
//!
//! | call | does |
//! |---|---|
//! | `GET /{v}/{catalog}` | the catalog node (`id`, `name`) — the healthcheck |
//! | `GET /{v}/{catalog}/products` | `fields`, `limit`, `after`, `filter` (`retailer_id` `is_any`/`eq`), `summary` |
//! | `POST /{v}/{catalog}/items_batch` | JSON body `item_type`, `allow_upsert`, `requests` (≤ [`SimOptions::max_batch`]) → `handles`, `validation_status` |
//! | `GET /{v}/{catalog}/check_batch_request_status` | `handle`, `load_ids_of_invalid_requests` |
//!
//! State is in memory: products in a `BTreeMap` by retailer id, so a page is a range scan
//! from the cursor (the hex of the last retailer id) and costs O(page size).
//!
//! Like Meta, it processes batches asynchronously: a batch answers `started` for
//! [`SimOptions::polls_before_finish`] polls (or until [`SimOptions::finish_after`] has
//! passed), then applies its requests and answers `finished` with per-request `errors`
//! (`line`, `id`, `message`; a sample of at most [`SimOptions::max_sample_errors`]) and
//! `ids_of_invalid_requests`. A request fails on a price that is not `"<amount> <CODE>"` in
//! the catalog currency, a negative or non-integer quantity, an unknown availability, an
//! UPDATE of a missing item without `allow_upsert`, or a create without a title or price.
//! A CREATE of an item that exists updates it; a DELETE removes it.
//!
//! Auth: the token goes in `Authorization: Bearer`, the `access_token` query parameter or
//! the JSON body; a missing one answers Graph's code 104, a wrong one code 190
//! (`OAuthException`, HTTP [`SimOptions::auth_error_status`], with `WWW-Authenticate`).
//! Rate limits are Business Use Case windows: `catalog_batch` (items_batch) and
//! `catalog_management` (everything else), reported on every answer in
//! `X-Business-Use-Case-Usage` and, once used up, answered with code 80014 / 80009 and
//! `estimated_time_to_regain_access` (minutes). The windows roll, as Meta's do: a call
//! counts against its use case for [`SimOptions::buc_window`] after it was admitted, so the
//! usage reported is the share of the budget spent in the last window, and access comes back
//! when the oldest counted call leaves it. [`Simulator::advance_usage_clock`] moves the
//! windows' clock forward, for tests that cannot wait an hour.
//!
//! Read prices are formatted for display ([`PriceFormat`]) with a `currency` field, as the
//! real products edge does; the admin API ([`SimControl`]) speaks the catalog currency and
//! the location code `"default"`, as the adapter reports them. An `appsecret_proof`
//! parameter, when sent, must match [`SimOptions::app_secret`] (Graph's code 100 otherwise).
//!
//! **Webhooks.** Subscribers registered with [`Simulator::subscribe`] (or
//! `POST /__sim/webhooks/subscriptions`; topics are change `field` names) first get Meta's
//! verification request (`GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`, which
//! must echo the challenge), then signed POSTs (`X-Hub-Signature-256: sha256=<hex>` under
//! [`SimOptions::app_secret`]) in the Graph envelope whenever a product changes: hand edits
//! ([`SimControl`], the `/__sim` admin API) always, and `items_batch` requests when the batch
//! is applied and the item actually changed (one delivery per batch, at most
//! [`SimOptions::webhook_max_changes`] changes each). [`Simulator::sell`] sends an order
//! change followed by the product's stock change. The product and order field names and
//! value shapes are not documented by Meta (see `events`): they follow
//! [`SimOptions::webhook_product_field`] and [`SimOptions::webhook_order_field`], the same
//! names the adapter reads. Delivery is retried a bounded number of times
//! ([`SimOptions::webhook_delivery`]) and can be dropped, duplicated, delayed or reordered
//! ([`Simulator::set_webhook_faults`], `POST /__sim/webhooks/faults`). Seeding emits nothing.
//!
//! Webhook admin routes (next to the SDK's `/__sim` routes, never faulted):
//! `POST|GET|DELETE /__sim/webhooks/subscriptions` (`{"url": "…", "topics": ["…"]}`),
//! `POST /__sim/webhooks/faults` ([`WebhookFaults`] as JSON, `{}` clears),
//! `GET /__sim/webhooks/stats` ([`WebhookStats`]) and `POST /__sim/orders`
//! (`{"sku": "…", "quantity": 1}` → [`Simulator::sell`]; 409 when it cannot be sold).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnisync_sdk::sim::{
    Faults, SimControl, SimCounters, SimRecord, SimServer, admin_router, fault_layer,
};
use omnisync_sdk::{Currency, Money, Offer, SecretRef, StockLevel};
use serde_json::{Map, Value, json};

use crate::graph::BUC_HEADER;
use crate::price::parse_write_format;
use crate::settings::{MAX_BATCH_LIMIT, Settings};
use crate::webhook::{DEFAULT_ORDER_FIELD, DEFAULT_PRODUCT_FIELD};

mod events;

pub use events::WEBHOOK_OBJECT;
pub use omnisync_sdk::sim::delivery::{DeliveryOptions, Subscription, WebhookFaults, WebhookStats};

use events::MetaProvider;
use omnisync_sdk::sim::delivery::{self, Dispatcher, WebhookAdmin};

/// The app secret the simulator signs webhooks with by default (demo credentials).
pub const DEMO_APP_SECRET: &str = "meta-demo-app-secret";
/// The verify token the simulator sends in the webhook handshake by default.
pub const DEMO_VERIFY_TOKEN: &str = "meta-demo-verify-token";

/// How the products edge formats `price` and `sale_price` for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriceFormat {
    /// `"1299.90 SEK"` (the write format).
    CodeSuffix,
    /// `"SEK1,299.90"`.
    CodePrefix,
    /// `"kr1,299.90"` (en_US with the currency's symbol; the code when it has none).
    #[default]
    SymbolPrefix,
    /// `"1 299,90 kr"` (Nordic locale, non-breaking spaces).
    NordicLocale,
}

/// What the simulator enforces and how it behaves.
///
/// The defaults are Meta's documented limits and fixed demo credentials:
/// catalog id **`1234567890`**, access token **`meta-demo-token`** (business id
/// `9876543210` in the usage header), app secret [`DEMO_APP_SECRET`], webhook verify token
/// [`DEMO_VERIFY_TOKEN`], currency SEK.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The catalog id served.
    pub catalog_id: String,
    /// The only access token accepted.
    pub access_token: String,
    /// The business id the usage header is keyed by.
    pub business_id: String,
    /// The catalog currency.
    pub currency: Currency,
    /// Most requests in one `items_batch` call (Meta: 5000).
    pub max_batch: usize,
    /// Largest `items_batch` body accepted (Meta: 28 MB); larger ones answer Graph's code 1
    /// "Please reduce the amount of data you're asking for".
    pub max_payload_bytes: usize,
    /// Largest `limit` honoured on the products edge; larger ones are capped.
    pub max_page_size: usize,
    /// Polls a batch answers `started` before it finishes.
    pub polls_before_finish: u32,
    /// A batch also finishes on its own after this long (as Meta's do, polled or not).
    pub finish_after: Duration,
    /// Most errors listed in a batch status (`errors` is a sample; the total is
    /// `errors_total_count`).
    pub max_sample_errors: usize,
    /// Display format of read prices.
    pub price_format: PriceFormat,
    /// The Business Use Case window: a call counts against its use case for this long after
    /// it was admitted (a rolling window, as Meta's). Default one hour.
    pub buc_window: Duration,
    /// `items_batch` calls allowed per window (`catalog_batch`; Meta's formula with one
    /// unique user gives 200 per hour — unconfirmed).
    pub catalog_batch_calls: u64,
    /// Other calls allowed per window (`catalog_management`; 20,000 per hour — unconfirmed).
    pub catalog_management_calls: u64,
    /// HTTP status of an auth failure (Graph answers token errors with 400).
    pub auth_error_status: u16,
    /// HTTP status of a rate-limit refusal.
    pub throttle_status: u16,
    /// The app secret: webhooks are signed with it, and an `appsecret_proof` must match it.
    /// Default [`DEMO_APP_SECRET`].
    pub app_secret: String,
    /// The verify token sent in the webhook handshake. Default [`DEMO_VERIFY_TOKEN`].
    pub webhook_verify_token: String,
    /// The change field of product webhooks (unconfirmed). Default `product_items`.
    pub webhook_product_field: String,
    /// The change field of order webhooks (unconfirmed). Default `orders`.
    pub webhook_order_field: String,
    /// Most changes in one webhook delivery (Meta batches up to 1000). Default 1000.
    pub webhook_max_changes: usize,
    /// How webhooks are delivered: timeouts and bounded retries.
    pub webhook_delivery: DeliveryOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            catalog_id: "1234567890".to_string(),
            access_token: "meta-demo-token".to_string(),
            business_id: "9876543210".to_string(),
            currency: Currency::SEK,
            max_batch: MAX_BATCH_LIMIT,
            max_payload_bytes: 28 * 1024 * 1024,
            max_page_size: 1000,
            polls_before_finish: 1,
            finish_after: Duration::from_secs(2),
            max_sample_errors: 100,
            price_format: PriceFormat::default(),
            buc_window: Duration::from_secs(3600),
            catalog_batch_calls: 200,
            catalog_management_calls: 20_000,
            auth_error_status: 400,
            throttle_status: 400,
            app_secret: DEMO_APP_SECRET.to_string(),
            webhook_verify_token: DEMO_VERIFY_TOKEN.to_string(),
            webhook_product_field: DEFAULT_PRODUCT_FIELD.to_string(),
            webhook_order_field: DEFAULT_ORDER_FIELD.to_string(),
            webhook_max_changes: 1000,
            webhook_delivery: DeliveryOptions::default(),
        }
    }
}

impl SimOptions {
    /// Adapter settings that work against a simulator with these options at `base_url`
    /// (literal token, app secret and verify token, so the adapter answers this simulator's
    /// handshake and verifies its webhooks; the same webhook field names; short batch
    /// polling; a generous request budget).
    pub fn settings(&self, base_url: &str) -> Settings {
        let token = SecretRef::Literal(self.access_token.clone());
        let mut s = Settings::new(self.catalog_id.clone(), token);
        s.app_secret = Some(SecretRef::Literal(self.app_secret.clone()));
        s.webhook_verify_token = Some(SecretRef::Literal(self.webhook_verify_token.clone()));
        s.webhook_product_field = self.webhook_product_field.clone();
        s.webhook_order_field = self.webhook_order_field.clone();
        s.base_url = base_url.to_string();
        s.currency = self.currency;
        s.batch_size = self.max_batch.clamp(1, MAX_BATCH_LIMIT);
        s.page_size = 500.min(self.max_page_size.max(1));
        s.batch_poll_interval_ms = 10;
        s.batch_poll_timeout_secs = 30;
        s.request_timeout_secs = 10;
        s.requests_per_second = 1000;
        s.burst = 1000;
        s
    }
}

/// The two Business Use Cases a catalog is limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UseCase {
    Batch,
    Management,
}

impl UseCase {
    fn name(self) -> &'static str {
        match self {
            UseCase::Batch => "catalog_batch",
            UseCase::Management => "catalog_management",
        }
    }
    fn code(self) -> i64 {
        match self {
            UseCase::Batch => 80014,
            UseCase::Management => 80009,
        }
    }
    fn message(self) -> &'static str {
        match self {
            UseCase::Batch => {
                "(#80014) There have been too many calls for the batch uploads to this catalog account. Wait a bit and try again. For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting#catalog."
            }
            UseCase::Management => {
                "(#80009) There have been too many calls to this Catalog account. Wait a bit and try again. For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
            }
        }
    }
}

/// The calls one use case admitted within the last [`SimOptions::buc_window`], oldest first.
#[derive(Debug, Default)]
struct Window {
    calls: VecDeque<Instant>,
}

impl Window {
    /// Forgets the calls that have left the window (`span` long) at `now`.
    fn roll(&mut self, now: Instant, span: Duration) {
        while self
            .calls
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= span)
        {
            self.calls.pop_front();
        }
    }

    /// Calls counted in the window.
    fn count(&self) -> u64 {
        self.calls.len() as u64
    }

    /// How long after `now` the window has room again under `limit`; `None` while it has.
    fn regain(&self, now: Instant, span: Duration, limit: u64) -> Option<Duration> {
        if self.count() < limit {
            return None;
        }
        // Room comes back when the call that puts the window at its limit leaves it.
        let index = usize::try_from(self.count() - limit).unwrap_or(usize::MAX);
        Some(match self.calls.get(index) {
            Some(&at) => (at + span).saturating_duration_since(now),
            None => span,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Product {
    id: u64,
    name: String,
    price: Money,
    sale: Option<Money>,
    availability: String,
    quantity: Option<i64>,
}

#[derive(Debug)]
struct Batch {
    created: Instant,
    polls: u32,
    allow_upsert: bool,
    /// (line, retailer id, method, data) of the requests that passed submission.
    requests: Vec<(usize, String, String, Map<String, Value>)>,
    result: Option<BatchResult>,
}

#[derive(Debug, Default)]
struct BatchResult {
    errors: Vec<(usize, String, String)>,
}

#[derive(Debug, Default)]
struct SimState {
    products: BTreeMap<String, Product>,
    next_id: u64,
    batches: HashMap<String, Batch>,
    next_handle: u64,
}

/// The simulator: state, faults and counters.
#[derive(Debug)]
pub struct Simulator {
    options: SimOptions,
    state: Mutex<SimState>,
    batch_window: Mutex<Window>,
    management_window: Mutex<Window>,
    /// How far [`Simulator::advance_usage_clock`] moved the windows' clock.
    usage_clock: Mutex<Duration>,
    faults: Faults,
    counters: SimCounters,
    traces: AtomicU64,
    webhooks: Dispatcher<MetaProvider>,
    orders: AtomicU64,
}

/// Starts a simulator on `addr` (use `127.0.0.1:0` in tests): the API wrapped in the fault
/// layer, plus the `/__sim` admin API.
pub async fn start(
    addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<(Arc<Simulator>, SimServer)> {
    let sim = Arc::new(Simulator::new(options));
    let api = Router::new()
        .route("/{version}/{catalog_id}", get(catalog_node))
        .route("/{version}/{catalog_id}/products", get(products))
        .route(
            "/{version}/{catalog_id}/items_batch",
            post(items_batch).layer(DefaultBodyLimit::max(
                sim.options.max_payload_bytes.saturating_add(1024 * 1024),
            )),
        )
        .route(
            "/{version}/{catalog_id}/check_batch_request_status",
            get(batch_status),
        )
        .fallback(unknown_path)
        .with_state(sim.clone());
    let router = fault_layer(api, sim.clone())
        .merge(admin_router(sim.clone()))
        .merge(delivery::admin_routes(sim.clone()));
    let server = SimServer::start(router, addr).await?;
    Ok((sim, server))
}

type Params = HashMap<String, String>;

impl Simulator {
    /// A simulator with an empty catalog.
    pub fn new(options: SimOptions) -> Self {
        Simulator {
            state: Mutex::new(SimState {
                next_id: 100_000_000_000_000,
                ..SimState::default()
            }),
            batch_window: Mutex::new(Window::default()),
            management_window: Mutex::new(Window::default()),
            usage_clock: Mutex::new(Duration::ZERO),
            faults: Faults::default(),
            counters: SimCounters::default(),
            traces: AtomicU64::new(1),
            webhooks: Dispatcher::new(
                MetaProvider {
                    app_secret: options.app_secret.clone(),
                    verify_token: options.webhook_verify_token.clone(),
                },
                options.webhook_delivery.clone(),
            ),
            orders: AtomicU64::new(1),
            options,
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    /// Moves the clock of the Business Use Case windows forward by `by`, as if that much time
    /// had passed for the rate limits: calls leave the rolling window and the time to regain
    /// access shrinks. Only the rate limits see it (batches, webhooks and the rest keep real
    /// time). For tests and demos of pacing that cannot wait an hour.
    pub fn advance_usage_clock(&self, by: Duration) {
        let mut ahead = self.usage_clock.lock().unwrap_or_else(|p| p.into_inner());
        *ahead = ahead.saturating_add(by);
    }

    /// The rate limits' clock: real time plus [`Simulator::advance_usage_clock`].
    fn usage_now(&self) -> Instant {
        let ahead = *self.usage_clock.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        now.checked_add(ahead).unwrap_or(now)
    }

    /// Batches submitted and not yet finished.
    pub fn pending_batches(&self) -> usize {
        self.lock()
            .batches
            .values()
            .filter(|b| b.result.is_none())
            .count()
    }

    /// Meta's product id of a retailer id, if the catalog holds it.
    pub fn product_id(&self, retailer_id: &str) -> Option<String> {
        self.lock()
            .products
            .get(retailer_id)
            .map(|p| p.id.to_string())
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn window(&self, use_case: UseCase) -> MutexGuard<'_, Window> {
        let w = match use_case {
            UseCase::Batch => &self.batch_window,
            UseCase::Management => &self.management_window,
        };
        w.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit(&self, use_case: UseCase) -> u64 {
        match use_case {
            UseCase::Batch => self.options.catalog_batch_calls,
            UseCase::Management => self.options.catalog_management_calls,
        }
    }

    fn trace(&self) -> String {
        format!("Sim{:010x}", self.traces.fetch_add(1, Ordering::Relaxed))
    }

    /// A Graph error answer.
    fn graph_error(
        &self,
        status: u16,
        code: i64,
        subcode: Option<i64>,
        message: impl Into<String>,
    ) -> Response {
        let mut error = json!({
            "message": message.into(),
            "type": if code == 100 || code == 2500 { "GraphMethodException" } else { "OAuthException" },
            "code": code,
            "fbtrace_id": self.trace(),
        });
        if let Some(sub) = subcode {
            error["error_subcode"] = json!(sub);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, axum::Json(json!({ "error": error }))).into_response()
    }

    /// Graph's answer to a missing or refused access token: error `code` with
    /// `WWW-Authenticate: OAuth "Facebook Platform" "{reason}" "{message}"`.
    fn token_refusal(&self, code: i64, reason: &str, message: &str) -> Response {
        let mut r = self.graph_error(self.options.auth_error_status, code, None, message);
        let challenge = format!("OAuth \"Facebook Platform\" \"{reason}\" \"{message}\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        r
    }

    fn invalid_parameter(&self, message: impl Into<String>) -> Response {
        self.graph_error(400, 100, None, message)
    }

    /// The current usage of a use case (the share of its budget spent in the last window),
    /// in Meta's header shape.
    fn usage_header(&self, use_case: UseCase) -> Option<HeaderValue> {
        let limit = self.limit(use_case);
        let now = self.usage_now();
        let (calls, regain) = {
            let mut w = self.window(use_case);
            w.roll(now, self.options.buc_window);
            (w.count(), w.regain(now, self.options.buc_window, limit))
        };
        // Whole minutes, rounded up, never 0 while refusing (0 means "not throttled").
        let regain = regain.map_or(0, |left| left.as_secs().div_ceil(60).max(1));
        let pct = match limit {
            0 => 100,
            _ => (calls.saturating_mul(100) / limit).min(100),
        };
        let value = json!({
            self.options.business_id.clone(): [{
                "type": use_case.name(),
                "call_count": pct,
                "total_cputime": pct / 4,
                "total_time": pct / 4,
                "estimated_time_to_regain_access": regain,
            }]
        });
        HeaderValue::from_str(&value.to_string()).ok()
    }

    /// Counts one call against a use case, or refuses it (a refused call is not counted).
    fn admit(&self, use_case: UseCase) -> Result<(), Box<Response>> {
        let limit = self.limit(use_case);
        let now = self.usage_now();
        let mut w = self.window(use_case);
        w.roll(now, self.options.buc_window);
        if w.count() >= limit {
            drop(w);
            self.counters.throttled();
            return Err(Box::new(self.graph_error(
                self.options.throttle_status,
                use_case.code(),
                None,
                use_case.message(),
            )));
        }
        w.calls.push_back(now);
        Ok(())
    }

    /// Auth, catalog id and rate limit, in Graph's order.
    fn gate(
        &self,
        headers: &HeaderMap,
        params: &Params,
        body: Option<&Value>,
        version: &str,
        catalog_id: &str,
        use_case: UseCase,
    ) -> Result<(), Box<Response>> {
        if !is_version(version) {
            return Err(Box::new(self.graph_error(
                400,
                2500,
                None,
                format!("Unknown path components: /{version}/{catalog_id}"),
            )));
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            })
            .map(str::trim);
        let token = bearer
            .or_else(|| params.get("access_token").map(String::as_str))
            .or_else(|| {
                body.and_then(|b| b.get("access_token"))
                    .and_then(Value::as_str)
            });
        match token {
            None | Some("") => {
                return Err(Box::new(self.token_refusal(
                    104,
                    "invalid_request",
                    "An access token is required to request this resource.",
                )));
            }
            Some(t) if t != self.options.access_token => {
                return Err(Box::new(self.token_refusal(
                    190,
                    "invalid_token",
                    "Invalid OAuth access token - Cannot parse access token",
                )));
            }
            Some(_) => {}
        }
        if let Some(proof) = params.get("appsecret_proof") {
            let expected = hex::encode(omnisync_sdk::webhook::hmac_sha256(
                self.options.app_secret.as_bytes(),
                self.options.access_token.as_bytes(),
            ));
            if !proof.eq_ignore_ascii_case(&expected) {
                return Err(Box::new(self.invalid_parameter(
                    "Invalid appsecret_proof provided in the API argument",
                )));
            }
        }
        if catalog_id != self.options.catalog_id {
            return Err(Box::new(self.graph_error(
                400,
                100,
                Some(33),
                format!(
                    "Unsupported get request. Object with ID '{catalog_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
            )));
        }
        self.admit(use_case)
    }

    /// Adds the usage header to an answer.
    fn finish(&self, mut response: Response, use_case: UseCase) -> Response {
        if let Some(v) = self.usage_header(use_case) {
            response.headers_mut().insert(BUC_HEADER, v);
        }
        response
    }

    /// Finishes batches whose time has come and forgets those finished an hour ago.
    fn settle(&self, state: &mut SimState) {
        state
            .batches
            .retain(|_, b| b.result.is_none() || b.created.elapsed() < FORGET_BATCHES_AFTER);
        let due: Vec<String> = state
            .batches
            .iter()
            .filter(|(_, b)| b.result.is_none() && b.created.elapsed() >= self.options.finish_after)
            .map(|(h, _)| h.clone())
            .collect();
        for handle in due {
            self.process(state, &handle);
        }
    }

    /// Applies a batch's requests, once.
    fn process(&self, state: &mut SimState, handle: &str) {
        let Some(batch) = state.batches.get_mut(handle) else {
            return;
        };
        if batch.result.is_some() {
            return;
        }
        let requests = std::mem::take(&mut batch.requests);
        let allow_upsert = batch.allow_upsert;
        let mut result = BatchResult::default();
        let mut changes = Vec::new();
        let field = &self.options.webhook_product_field;
        let catalog = &self.options.catalog_id;
        // Nobody listening: apply without preparing notifications.
        let notify = self.webhooks.wants(field);
        for (line, rid, method, data) in requests {
            let before = if notify {
                state.products.get(&rid).cloned()
            } else {
                None
            };
            match self.apply(state, &rid, &method, &data, allow_upsert) {
                Err(message) => result.errors.push((line, rid, message)),
                Ok(()) if !notify => {}
                Ok(()) => {
                    let after = state.products.get(&rid);
                    if after == before.as_ref() {
                        continue;
                    }
                    let (verb, id) = match (&before, after) {
                        (None, after) => ("create", after.map(|p| p.id)),
                        (Some(b), None) => ("delete", Some(b.id)),
                        (Some(_), Some(a)) => ("update", Some(a.id)),
                    };
                    let mut fields: Vec<&str> = data
                        .keys()
                        .map(String::as_str)
                        .filter(|k| *k != "id")
                        .collect();
                    fields.sort_unstable();
                    changes.push(events::product_change(
                        field, catalog, &rid, id, verb, &fields,
                    ));
                }
            }
        }
        if let Some(batch) = state.batches.get_mut(handle) {
            batch.result = Some(result);
        }
        // One delivery per applied batch (chunked), after the batch is applied.
        let max = self.options.webhook_max_changes.max(1);
        while !changes.is_empty() {
            let rest = changes.split_off(changes.len().min(max));
            let chunk = std::mem::replace(&mut changes, rest);
            self.webhooks
                .emit(field, |_| events::envelope(catalog, chunk));
        }
    }

    /// Applies one request atomically, or says why not.
    fn apply(
        &self,
        state: &mut SimState,
        rid: &str,
        method: &str,
        data: &Map<String, Value>,
        allow_upsert: bool,
    ) -> Result<(), String> {
        let currency = self.options.currency;
        let exists = state.products.contains_key(rid);
        if method == "DELETE" {
            return match state.products.remove(rid) {
                Some(_) => Ok(()),
                None => Err(format!("Product item with id {rid} does not exist")),
            };
        }
        let creating = match (method, exists) {
            (_, true) => false,
            ("CREATE", false) => true,
            (_, false) if allow_upsert => true,
            _ => {
                return Err(format!(
                    "Product item with id {rid} does not exist and allow_upsert is false"
                ));
            }
        };
        let price = match data.get("price") {
            None => None,
            Some(Value::String(s)) => Some(
                parse_write_format(s, currency)
                    .map_err(|e| format!("Invalid value for price: {e}"))?,
            ),
            Some(other) => return Err(format!("Invalid value for price: {other}")),
        };
        let sale = match data.get("sale_price") {
            None => None,
            Some(Value::String(s)) if s.trim().is_empty() => Some(None),
            Some(Value::String(s)) => Some(Some(
                parse_write_format(s, currency)
                    .map_err(|e| format!("Invalid value for sale_price: {e}"))?,
            )),
            Some(other) => return Err(format!("Invalid value for sale_price: {other}")),
        };
        let quantity = match data.get("quantity_to_sell_on_facebook") {
            None => None,
            Some(v) => {
                let q = match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    format!("Invalid value for quantity_to_sell_on_facebook: {v} is not an integer")
                })?;
                if q < 0 {
                    return Err(format!(
                        "Invalid value for quantity_to_sell_on_facebook: {q} must not be negative"
                    ));
                }
                Some(q)
            }
        };
        let availability = match data.get("availability") {
            None => None,
            Some(Value::String(a)) if AVAILABILITY.contains(&a.as_str()) => Some(a.clone()),
            Some(other) => return Err(format!("Invalid value for availability: {other}")),
        };
        let title = match data.get("title").or_else(|| data.get("name")) {
            None => None,
            Some(Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
            Some(other) => return Err(format!("Invalid value for title: {other}")),
        };
        if creating {
            let Some(title) = title else {
                return Err(
                    "You cannot create a product item without required field title".to_string(),
                );
            };
            let Some(price) = price else {
                return Err(
                    "You cannot create a product item without required field price".to_string(),
                );
            };
            let id = state.next_id;
            state.next_id += 1;
            let availability =
                availability.unwrap_or_else(|| availability_for(quantity.unwrap_or(0)).to_string());
            state.products.insert(
                rid.to_string(),
                Product {
                    id,
                    name: title,
                    price,
                    sale: sale.flatten(),
                    availability,
                    quantity,
                },
            );
            return Ok(());
        }
        let Some(product) = state.products.get_mut(rid) else {
            return Err(format!("Product item with id {rid} does not exist"));
        };
        if let Some(title) = title {
            product.name = title;
        }
        if let Some(price) = price {
            product.price = price;
        }
        if let Some(sale) = sale {
            product.sale = sale;
        }
        if let Some(q) = quantity {
            product.quantity = Some(q);
        }
        if let Some(a) = availability {
            product.availability = a;
        }
        Ok(())
    }

    /// One product as the products edge shows it.
    fn node(&self, rid: &str, p: &Product, fields: &[&str]) -> Value {
        let mut node = Map::new();
        for &field in fields {
            let value = match field {
                "id" => json!(p.id.to_string()),
                "retailer_id" => json!(rid),
                "name" => json!(p.name),
                "price" => json!(display_price(p.price, self.options.price_format)),
                "sale_price" => match p.sale {
                    Some(s) => json!(display_price(s, self.options.price_format)),
                    None => continue,
                },
                "currency" => json!(p.price.currency.code()),
                "availability" => json!(p.availability),
                "quantity_to_sell_on_facebook" => match p.quantity {
                    Some(q) => json!(q),
                    None => continue,
                },
                _ => continue,
            };
            node.insert(field.to_string(), value);
        }
        node.insert("id".into(), json!(p.id.to_string()));
        Value::Object(node)
    }

    fn record_of(rid: &str, p: &Product) -> SimRecord {
        let mut stock = BTreeMap::new();
        if let Some(q) = p.quantity {
            stock.insert(StockLevel::DEFAULT_LOCATION.to_string(), q);
        }
        SimRecord {
            sku: rid.to_string(),
            title: p.name.clone(),
            offer: Offer {
                price: p.price,
                sale: p.sale,
            },
            stock,
        }
    }

    /// Emits one product change for `rid` (a hand edit).
    fn emit_product(&self, rid: &str, id: Option<u64>, verb: &str, fields: &[&str]) {
        let field = &self.options.webhook_product_field;
        let catalog = &self.options.catalog_id;
        self.webhooks.emit(field, |_| {
            events::envelope(
                catalog,
                vec![events::product_change(
                    field, catalog, rid, id, verb, fields,
                )],
            )
        });
    }

    /// Sells `quantity` units of `retailer_id` (a shop order): lowers
    /// `quantity_to_sell_on_facebook` (the catalog's one location, `"default"`), then emits an
    /// order change followed by the product's stock change. `false` (and nothing changes) for
    /// an unknown item, a quantity below 1, or when it holds fewer units.
    pub fn sell(&self, retailer_id: &str, quantity: i64) -> bool {
        if quantity < 1 {
            return false;
        }
        let mut state = self.lock();
        self.settle(&mut state);
        let Some(p) = state.products.get_mut(retailer_id) else {
            return false;
        };
        let Some(held) = p.quantity.filter(|q| *q >= quantity) else {
            return false;
        };
        p.quantity = Some(held - quantity);
        p.availability = availability_for(held - quantity).to_string();
        let id = p.id;
        drop(state);
        let order_id = self.orders.fetch_add(1, Ordering::Relaxed);
        let field = &self.options.webhook_order_field;
        let catalog = &self.options.catalog_id;
        self.webhooks.emit(field, |_| {
            events::envelope(
                catalog,
                vec![events::order(
                    field,
                    catalog,
                    order_id,
                    retailer_id,
                    quantity,
                )],
            )
        });
        self.emit_product(
            retailer_id,
            Some(id),
            "update",
            &["availability", "quantity_to_sell_on_facebook"],
        );
        true
    }

    fn product_of(id: u64, record: &SimRecord) -> Product {
        let quantity = record.stock.get(StockLevel::DEFAULT_LOCATION).copied();
        Product {
            id,
            name: record.title.clone(),
            price: record.offer.price,
            sale: record.offer.sale,
            availability: availability_for(quantity.unwrap_or(0)).to_string(),
            quantity,
        }
    }
}

/// How long a finished batch's status stays available.
const FORGET_BATCHES_AFTER: Duration = Duration::from_secs(3600);

/// Availability values Meta accepts.
const AVAILABILITY: &[&str] = &[
    "in stock",
    "out of stock",
    "preorder",
    "available for order",
    "discontinued",
    "pending",
    "mark_as_sold",
];

/// Fields of a product item the simulator knows (others answer Graph's error 100).
const KNOWN_FIELDS: &[&str] = &[
    "id",
    "retailer_id",
    "name",
    "price",
    "sale_price",
    "sale_price_start_date",
    "sale_price_end_date",
    "currency",
    "availability",
    "quantity_to_sell_on_facebook",
    "inventory",
    "description",
    "url",
    "image_url",
    "brand",
    "condition",
    "retailer_product_group_id",
    "review_status",
    "visibility",
];

fn availability_for(quantity: i64) -> &'static str {
    if quantity > 0 {
        crate::adapter::IN_STOCK
    } else {
        crate::adapter::OUT_OF_STOCK
    }
}

fn is_version(v: &str) -> bool {
    v.len() >= 2 && v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Formats money for display.
pub fn display_price(money: Money, format: PriceFormat) -> String {
    let code = money.currency.code();
    let symbol = match code {
        "SEK" | "NOK" | "DKK" | "ISK" => "kr",
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        other => other,
    };
    let major = money.major_string();
    let (sign, digits) = match major.strip_prefix('-') {
        Some(rest) => ("-", rest.to_string()),
        None => ("", major),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (digits, None),
    };
    let grouped = |sep: &str| {
        let bytes = int.as_bytes();
        let mut out = String::new();
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && (bytes.len() - i) % 3 == 0 {
                out.push_str(sep);
            }
            out.push(*b as char);
        }
        out
    };
    let with = |group: &str, dec: &str| match &frac {
        Some(f) => format!("{}{dec}{f}", grouped(group)),
        None => grouped(group),
    };
    match format {
        PriceFormat::CodeSuffix => format!(
            "{sign}{} {code}",
            money.major_string().trim_start_matches('-')
        ),
        PriceFormat::CodePrefix => format!("{sign}{code}{}", with(",", ".")),
        PriceFormat::SymbolPrefix => format!("{sign}{symbol}{}", with(",", ".")),
        PriceFormat::NordicLocale => format!("{sign}{}\u{a0}{symbol}", with("\u{a0}", ",")),
    }
}

fn requested_fields(params: &Params) -> Result<Vec<String>, String> {
    let Some(raw) = params.get("fields") else {
        return Ok(vec!["id".to_string()]);
    };
    let raw = raw.trim();
    let list: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).map_err(|e| e.to_string())?
    } else {
        raw.split(',').map(|f| f.trim().to_string()).collect()
    };
    for f in &list {
        if !f.is_empty() && !KNOWN_FIELDS.contains(&f.as_str()) {
            return Err(format!(
                "(#100) Tried accessing nonexisting field ({f}) on node type (ProductItem)"
            ));
        }
    }
    Ok(list.into_iter().filter(|f| !f.is_empty()).collect())
}

/// The retailer ids a `filter` selects (sorted), or why it is refused.
fn filter_ids(filter: &str) -> Result<Vec<String>, String> {
    let value: Value =
        serde_json::from_str(filter).map_err(|e| format!("(#100) Invalid filter: {e}"))?;
    let unsupported =
        || "(#100) The simulator supports only a retailer_id is_any/eq filter".to_string();
    let cond = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("retailer_id"))
        .and_then(Value::as_object)
        .ok_or_else(unsupported)?;
    let mut ids: Vec<String> = if let Some(list) = cond.get("is_any") {
        list.as_array()
            .ok_or_else(unsupported)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(unsupported))
            .collect::<Result<_, _>>()?
    } else if let Some(one) = cond.get("eq") {
        vec![one.as_str().ok_or_else(unsupported)?.to_string()]
    } else {
        return Err(unsupported());
    };
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn cursor_of(rid: &str) -> String {
    hex::encode(rid.as_bytes())
}

fn rid_of_cursor(cursor: &str) -> Option<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

async fn catalog_node(
    State(sim): State<Arc<Simulator>>,
    Path((version, catalog_id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let uc = UseCase::Management;
    if let Err(r) = sim.gate(&headers, &params, None, &version, &catalog_id, uc) {
        return sim.finish(*r, uc);
    }
    let body = json!({ "id": sim.options.catalog_id, "name": "omnisync simulated catalog" });
    sim.finish(axum::Json(body).into_response(), uc)
}

async fn products(
    State(sim): State<Arc<Simulator>>,
    Path((version, catalog_id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let uc = UseCase::Management;
    if let Err(r) = sim.gate(&headers, &params, None, &version, &catalog_id, uc) {
        return sim.finish(*r, uc);
    }
    let answer = products_answer(&sim, &params, &headers, &version, &catalog_id);
    sim.finish(answer, uc)
}

fn products_answer(
    sim: &Simulator,
    params: &Params,
    headers: &HeaderMap,
    version: &str,
    catalog_id: &str,
) -> Response {
    let fields = match requested_fields(params) {
        Ok(f) => f,
        Err(m) => return sim.invalid_parameter(m),
    };
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) if l > 0 => l.min(sim.options.max_page_size),
        Some(_) => return sim.invalid_parameter("(#100) Param limit must be a positive integer"),
    };
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(c) => match rid_of_cursor(c) {
            Some(rid) => Some(rid),
            None => return sim.invalid_parameter("(#100) Invalid cursor"),
        },
    };
    let filter = match params.get("filter").map(|f| filter_ids(f)) {
        None => None,
        Some(Ok(ids)) => Some(ids),
        Some(Err(m)) => return sim.invalid_parameter(m),
    };
    let mut state = sim.lock();
    sim.settle(&mut state);
    let mut rows: Vec<(String, Value)> = Vec::with_capacity(limit + 1);
    let total;
    match &filter {
        None => {
            total = state.products.len();
            let lower = match &after {
                Some(a) => Bound::Excluded(a.as_str()),
                None => Bound::Unbounded,
            };
            for (rid, p) in state
                .products
                .range::<str, _>((lower, Bound::Unbounded))
                .take(limit + 1)
            {
                rows.push((rid.clone(), sim.node(rid, p, &field_refs)));
            }
        }
        Some(ids) => {
            let matched: Vec<&String> = ids
                .iter()
                .filter(|id| state.products.contains_key(id.as_str()))
                .collect();
            total = matched.len();
            for rid in matched
                .into_iter()
                .filter(|rid| after.as_ref().is_none_or(|a| rid.as_str() > a.as_str()))
                .take(limit + 1)
            {
                if let Some(p) = state.products.get(rid.as_str()) {
                    rows.push((rid.clone(), sim.node(rid, p, &field_refs)));
                }
            }
        }
    }
    drop(state);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut body = json!({ "data": rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() });
    if let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) {
        let mut paging = json!({
            "cursors": { "before": cursor_of(first), "after": cursor_of(last) }
        });
        if more {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            let mut pairs: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| k.as_str() != "after" && k.as_str() != "access_token")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            pairs.push(("after".into(), cursor_of(last)));
            pairs.sort();
            if let Ok(url) = reqwest::Url::parse_with_params(
                &format!("http://{host}/{version}/{catalog_id}/products"),
                &pairs,
            ) {
                paging["next"] = json!(url.to_string());
            }
        }
        body["paging"] = paging;
    }
    if params.get("summary").is_some_and(|s| s == "true") {
        body["summary"] = json!({ "total_count": total });
    }
    axum::Json(body).into_response()
}

async fn items_batch(
    State(sim): State<Arc<Simulator>>,
    Path((version, catalog_id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let uc = UseCase::Batch;
    if body.len() > sim.options.max_payload_bytes {
        let answer = sim.graph_error(
            500,
            1,
            Some(1_357_046),
            "Please reduce the amount of data you're asking for, then retry your request",
        );
        return sim.finish(answer, uc);
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if let Err(r) = sim.gate(
        &headers,
        &params,
        parsed.as_ref(),
        &version,
        &catalog_id,
        uc,
    ) {
        return sim.finish(*r, uc);
    }
    let answer = match parsed {
        Some(body) => batch_answer(&sim, &body),
        None => sim.invalid_parameter("(#100) The request body must be a JSON object"),
    };
    sim.finish(answer, uc)
}

fn batch_answer(sim: &Simulator, body: &Value) -> Response {
    match body.get("item_type").and_then(Value::as_str) {
        Some("PRODUCT_ITEM") => {}
        Some(other) => {
            return sim.invalid_parameter(format!(
                "(#100) Param item_type must be one of {{PRODUCT_ITEM}} - got \"{other}\""
            ));
        }
        None => return sim.invalid_parameter("(#100) The parameter item_type is required"),
    }
    let allow_upsert = match body.get("allow_upsert") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s != "false",
        Some(_) => return sim.invalid_parameter("(#100) Param allow_upsert must be a boolean"),
    };
    let requests = match body.get("requests") {
        Some(Value::Array(r)) => r,
        Some(Value::String(s)) => {
            // Form-style: requests as a JSON string.
            return match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(_)) => {
                    let mut body = body.clone();
                    if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                        body["requests"] = parsed;
                    }
                    batch_answer(sim, &body)
                }
                _ => sim.invalid_parameter("(#100) Param requests must be an array"),
            };
        }
        _ => return sim.invalid_parameter("(#100) The parameter requests is required"),
    };
    if requests.is_empty() {
        return sim.invalid_parameter("(#100) Param requests must contain at least one request");
    }
    if requests.len() > sim.options.max_batch {
        return sim.invalid_parameter(format!(
            "(#100) Param requests must contain at most {} requests - got {}",
            sim.options.max_batch,
            requests.len()
        ));
    }
    let mut accepted = Vec::with_capacity(requests.len());
    let mut validation = Vec::new();
    for (line, request) in requests.iter().enumerate() {
        let data = request.get("data").and_then(Value::as_object);
        let rid = data.and_then(|d| d.get("id")).and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase);
        let problem = match (&rid, method.as_deref(), data) {
            (_, _, None) => Some("The field data is required and must be an object"),
            (None, _, _) => Some("The field data.id is required"),
            (_, None, _) => Some("The field method is required"),
            (_, Some("CREATE" | "UPDATE" | "DELETE"), _) => None,
            (_, Some(_), _) => Some("The field method must be one of CREATE, UPDATE, DELETE"),
        };
        match (problem, rid, method, data) {
            (None, Some(rid), Some(method), Some(data)) => {
                accepted.push((line, rid, method, data.clone()));
            }
            (problem, rid, _, _) => validation.push(json!({
                "retailer_id": rid.unwrap_or_default(),
                "errors": [{ "message": problem.unwrap_or("Invalid request") }],
                "warnings": [],
            })),
        }
    }
    sim.counters.write(requests.len());
    let mut handles = Vec::new();
    if !accepted.is_empty() {
        let mut state = sim.lock();
        sim.settle(&mut state);
        state.next_handle += 1;
        let handle = format!("AcSimBatchHandle{:012}", state.next_handle);
        state.batches.insert(
            handle.clone(),
            Batch {
                created: Instant::now(),
                polls: 0,
                allow_upsert,
                requests: accepted,
                result: None,
            },
        );
        handles.push(handle);
    }
    axum::Json(json!({ "handles": handles, "validation_status": validation })).into_response()
}

async fn batch_status(
    State(sim): State<Arc<Simulator>>,
    Path((version, catalog_id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let uc = UseCase::Management;
    if let Err(r) = sim.gate(&headers, &params, None, &version, &catalog_id, uc) {
        return sim.finish(*r, uc);
    }
    let answer = status_answer(&sim, &params);
    sim.finish(answer, uc)
}

fn status_answer(sim: &Simulator, params: &Params) -> Response {
    let Some(handle) = params.get("handle").filter(|h| !h.is_empty()) else {
        return sim.invalid_parameter("(#100) The parameter handle is required");
    };
    let load_ids = params
        .get("load_ids_of_invalid_requests")
        .is_some_and(|v| v == "true" || v == "1");
    let mut state = sim.lock();
    sim.settle(&mut state);
    let finish_now = match state.batches.get_mut(handle.as_str()) {
        None => {
            drop(state);
            return sim.invalid_parameter(format!("(#100) Invalid handle: {handle}"));
        }
        Some(batch) => {
            batch.polls += 1;
            batch.result.is_none() && batch.polls > sim.options.polls_before_finish
        }
    };
    if finish_now {
        sim.process(&mut state, handle);
    }
    let node = match state
        .batches
        .get(handle.as_str())
        .and_then(|b| b.result.as_ref())
    {
        None => json!({
            "handle": handle,
            "status": "started",
            "errors": [],
            "errors_total_count": 0,
            "warnings": [],
            "warnings_total_count": 0,
            "ids_of_invalid_requests": [],
        }),
        Some(result) => {
            let errors: Vec<Value> = result
                .errors
                .iter()
                .take(sim.options.max_sample_errors)
                .map(|(line, rid, message)| json!({ "line": line, "id": rid, "message": message }))
                .collect();
            let mut ids: Vec<&str> = Vec::new();
            if load_ids {
                for (_, rid, _) in &result.errors {
                    if !ids.contains(&rid.as_str()) {
                        ids.push(rid);
                    }
                }
            }
            json!({
                "handle": handle,
                "status": "finished",
                "errors": errors,
                "errors_total_count": result.errors.len(),
                "warnings": [],
                "warnings_total_count": 0,
                "ids_of_invalid_requests": ids,
            })
        }
    };
    drop(state);
    axum::Json(json!({ "data": [node] })).into_response()
}

async fn unknown_path(State(sim): State<Arc<Simulator>>, uri: axum::http::Uri) -> Response {
    sim.graph_error(
        400,
        2500,
        None,
        format!("Unknown path components: {}", uri.path()),
    )
}

/// The webhook controls ([`WebhookAdmin::subscribe`] and the rest): topics are change field
/// names. Before the first delivery a subscriber must pass Meta's verification request (echo
/// `hub.challenge`); until it does, each delivery attempt fails and is retried.
impl WebhookAdmin for Simulator {
    type Provider = MetaProvider;
    fn webhooks(&self) -> &Dispatcher<MetaProvider> {
        &self.webhooks
    }
    fn sell(&self, sku: &str, quantity: i64) -> bool {
        Simulator::sell(self, sku, quantity)
    }
}

impl SimControl for Simulator {
    fn kind(&self) -> &'static str {
        crate::KIND
    }

    fn seed(&self, records: Vec<SimRecord>) {
        let mut state = self.lock();
        let mut products = BTreeMap::new();
        let mut id = state.next_id;
        for record in &records {
            products.insert(record.sku.clone(), Simulator::product_of(id, record));
            id += 1;
        }
        state.products = products;
        state.next_id = id;
    }

    fn records(&self) -> Vec<SimRecord> {
        let mut state = self.lock();
        self.settle(&mut state);
        state
            .products
            .iter()
            .map(|(rid, p)| Simulator::record_of(rid, p))
            .collect()
    }

    fn record(&self, sku: &str) -> Option<SimRecord> {
        let mut state = self.lock();
        self.settle(&mut state);
        state
            .products
            .get(sku)
            .map(|p| Simulator::record_of(sku, p))
    }

    fn set_offer(&self, sku: &str, offer: Offer) -> bool {
        let mut state = self.lock();
        let Some(p) = state.products.get_mut(sku) else {
            return false;
        };
        p.price = offer.price;
        p.sale = offer.sale;
        let id = p.id;
        drop(state);
        self.emit_product(sku, Some(id), "update", &["price", "sale_price"]);
        true
    }

    fn set_stock(&self, sku: &str, location: &str, quantity: i64) -> bool {
        if location != StockLevel::DEFAULT_LOCATION {
            return false;
        }
        let mut state = self.lock();
        let Some(p) = state.products.get_mut(sku) else {
            return false;
        };
        p.quantity = Some(quantity);
        p.availability = availability_for(quantity).to_string();
        let id = p.id;
        drop(state);
        self.emit_product(
            sku,
            Some(id),
            "update",
            &["availability", "quantity_to_sell_on_facebook"],
        );
        true
    }

    fn remove(&self, sku: &str) -> bool {
        let removed = self.lock().products.remove(sku);
        match removed {
            Some(p) => {
                self.emit_product(sku, Some(p.id), "delete", &[]);
                true
            }
            None => false,
        }
    }

    fn add(&self, record: SimRecord) {
        let mut state = self.lock();
        let (id, verb) = match state.products.get(&record.sku) {
            Some(p) => (p.id, "update"),
            None => {
                state.next_id += 1;
                (state.next_id - 1, "create")
            }
        };
        state
            .products
            .insert(record.sku.clone(), Simulator::product_of(id, &record));
        drop(state);
        self.emit_product(
            &record.sku,
            Some(id),
            verb,
            &[
                "availability",
                "name",
                "price",
                "quantity_to_sell_on_facebook",
                "sale_price",
            ],
        );
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    fn counters(&self) -> &SimCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::parse_price;

    #[test]
    fn display_prices_read_back() {
        let m = Money::new(129_990, Currency::SEK);
        assert_eq!(display_price(m, PriceFormat::CodeSuffix), "1299.90 SEK");
        assert_eq!(display_price(m, PriceFormat::CodePrefix), "SEK1,299.90");
        assert_eq!(display_price(m, PriceFormat::SymbolPrefix), "kr1,299.90");
        assert_eq!(
            display_price(m, PriceFormat::NordicLocale),
            "1\u{a0}299,90\u{a0}kr"
        );
        for format in [
            PriceFormat::CodeSuffix,
            PriceFormat::CodePrefix,
            PriceFormat::SymbolPrefix,
            PriceFormat::NordicLocale,
        ] {
            for minor in [0, 5, 99, 100, 12_990, 100_000_000, 123_456_789] {
                let m = Money::new(minor, Currency::SEK);
                let shown = display_price(m, format);
                assert_eq!(
                    parse_price(&shown, Currency::SEK, Some("SEK")),
                    Ok(m),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn filters_and_cursors() {
        assert_eq!(
            filter_ids(r#"{"retailer_id":{"is_any":["b","a","b"]}}"#).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            filter_ids(r#"{"retailer_id":{"eq":"x"}}"#).unwrap(),
            vec!["x"]
        );
        assert!(filter_ids(r#"{"name":{"i_contains":"x"}}"#).is_err());
        assert_eq!(rid_of_cursor(&cursor_of("SKU-ø")).as_deref(), Some("SKU-ø"));
        assert!(rid_of_cursor("zz").is_none());
    }

    /// The `catalog_batch` entry of the usage header, as (call_count, minutes to regain).
    fn batch_usage(sim: &Simulator) -> (u64, u64) {
        let header = sim.usage_header(UseCase::Batch).unwrap();
        let value: Value = serde_json::from_str(header.to_str().unwrap()).unwrap();
        let entry = &value["9876543210"][0];
        assert_eq!(entry["type"], "catalog_batch");
        (
            entry["call_count"].as_u64().unwrap(),
            entry["estimated_time_to_regain_access"].as_u64().unwrap(),
        )
    }

    #[test]
    fn business_use_case_windows_roll() {
        let sim = Simulator::new(SimOptions {
            catalog_batch_calls: 4,
            buc_window: Duration::from_secs(3600),
            ..SimOptions::default()
        });
        assert_eq!(batch_usage(&sim), (0, 0));
        assert!(sim.admit(UseCase::Batch).is_ok());
        assert!(sim.admit(UseCase::Batch).is_ok());
        assert_eq!(batch_usage(&sim), (50, 0));
        sim.advance_usage_clock(Duration::from_secs(1800));
        assert!(sim.admit(UseCase::Batch).is_ok());
        assert!(sim.admit(UseCase::Batch).is_ok());
        // Used up: access comes back when the two oldest calls leave, in 30 minutes.
        assert_eq!(batch_usage(&sim), (100, 30));
        assert!(sim.admit(UseCase::Batch).is_err());
        sim.advance_usage_clock(Duration::from_secs(1200));
        assert_eq!(batch_usage(&sim), (100, 10));
        // An hour after the first calls only they have left: half the budget is still spent
        // (a fixed window would have started again from nothing).
        sim.advance_usage_clock(Duration::from_secs(600));
        assert_eq!(batch_usage(&sim), (50, 0));
        assert!(sim.admit(UseCase::Batch).is_ok());
        assert_eq!(batch_usage(&sim), (75, 0));
        sim.advance_usage_clock(Duration::from_secs(3600));
        assert_eq!(batch_usage(&sim), (0, 0));
        // Refused calls do not count; the other use case has its own window.
        let management: Value = serde_json::from_str(
            sim.usage_header(UseCase::Management)
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(management["9876543210"][0]["call_count"], 0);
    }

    #[test]
    fn seeding_is_fast_and_paging_is_a_range() {
        let sim = Simulator::new(SimOptions::default());
        let records: Vec<SimRecord> = (0..100_000)
            .map(|i| SimRecord {
                sku: format!("SKU-{i:06}"),
                title: format!("Item {i}"),
                offer: Offer::regular(Money::new(1000 + i, Currency::SEK)),
                stock: BTreeMap::from([("default".to_string(), i % 7)]),
            })
            .collect();
        sim.seed(records);
        assert_eq!(sim.records().len(), 100_000);
        assert!(sim.set_stock("SKU-000001", "default", 3));
        assert!(!sim.set_stock("SKU-000001", "oslo", 3));
        assert!(!sim.set_offer("nope", Offer::regular(Money::new(1, Currency::SEK))));
    }
}
