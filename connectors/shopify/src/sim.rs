//! A loopback simulator of the Shopify Admin GraphQL API, for tests, demos and rehearsals.
//!
//! It serves `POST /admin/api/{version}/graphql.json` with a real GraphQL engine
//! (`async-graphql`: documents, variables, aliases, directives), checks
//! `X-Shopify-Access-Token` (a wrong or missing token gets Shopify's 401 body), charges each
//! document's cost (Shopify's rules) against a leaky bucket and answers `THROTTLED` or
//! `MAX_COST_EXCEEDED` as Shopify does, enforces the 250-element input arrays and page
//! sizes, requires `@idempotent` and `changeFromQuantity` from API version 2026-04 on and
//! replays idempotent requests, and runs bulk queries whose JSONL results it serves from
//! `GET /bulk-results/{id}.jsonl?sig=…` (a signed URL: no token needed, as with Shopify's
//! storage URLs). The `/__sim` admin API comes from [`omnisync_sdk::sim::admin_router`].
//!
//! **Webhooks.** Like a shop with an app subscribed, it POSTs signed webhooks to the
//! subscribers registered with [`Simulator::subscribe`] (or
//! `POST /__sim/webhooks/subscriptions`) when its state changes: `inventory_levels/update`
//! for a quantity, `products/update` for a price, `products/create|delete` for added and
//! removed listings, and `orders/create` for a [`Simulator::sell`]. Changes made "by hand"
//! ([`SimControl`], the `/__sim` admin API) always emit; changes made through the API emit
//! when they change a stored value, as Shopify does for changes made by apps. Deliveries
//! carry Shopify's headers (`X-Shopify-Topic`, `X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256
//! of the raw body under [`SimOptions::webhook_secret`], `X-Shopify-Shop-Domain`,
//! `X-Shopify-API-Version`, `X-Shopify-Webhook-Id`, `X-Shopify-Event-Id`,
//! `X-Shopify-Triggered-At`), are retried a bounded number of times
//! ([`SimOptions::webhook_delivery`]) and can be dropped, duplicated, delayed or reordered
//! for rehearsals ([`Simulator::set_webhook_faults`], `POST /__sim/webhooks/faults`).
//! Seeding emits nothing.
//!
//! Webhook admin routes (next to the SDK's `/__sim` routes, never faulted):
//! `POST|GET|DELETE /__sim/webhooks/subscriptions` (`{"url": "…", "topics": ["…"]}`),
//! `POST /__sim/webhooks/faults` ([`WebhookFaults`] as JSON, `{}` clears),
//! `GET /__sim/webhooks/stats` ([`WebhookStats`]) and `POST /__sim/orders`
//! (`{"sku": "…", "quantity": 1}` → [`Simulator::sell`]; 409 when it cannot be sold).
//!
//! Each [`SimRecord`] is one variant; variants are grouped into products of one to three
//! (deterministically, in SKU order) so the per-product price mutation is exercised. Stock
//! is keyed by location gid and prices are in [`SimOptions::currency`], exactly as the
//! adapter reports them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnisync_sdk::sim::{
    Faults, SimControl, SimCounters, SimRecord, SimServer, admin_router, fault_layer,
};
use omnisync_sdk::{Currency, Offer, SecretRef};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::graphql::TOKEN_HEADER;
use crate::mapping::money_from_offer;
use crate::settings::{DEFAULT_API_VERSION, Settings};

mod bulk;
mod catalog;
mod cost;
mod events;
mod schema;

pub use omnisync_sdk::sim::delivery::{DeliveryOptions, Subscription, WebhookFaults, WebhookStats};

use catalog::{Catalog, gid};
use cost::LeakyBucket;
use events::ShopifyProvider;
use omnisync_sdk::sim::delivery::{self, Dispatcher, WebhookAdmin};
use schema::{
    BulkOperation, BulkOperationStatus, BulkOperationType, BulkOperationUserErrorCode,
    InventorySetQuantitiesPayload, SimSchema, UnsignedInt64,
};

/// The access token the simulator accepts by default (demo credentials).
pub const DEMO_ACCESS_TOKEN: &str = "shpat_omnisync_demo_0123456789abcdef";

/// The app client secret the simulator signs webhooks with by default (demo credentials).
pub const DEMO_WEBHOOK_SECRET: &str = "shpss_omnisync_demo_webhook_secret_0123456789";

/// The shop domain sent in `X-Shopify-Shop-Domain` by default.
pub const DEMO_SHOP_DOMAIN: &str = "omnisync-demo.myshopify.com";

/// Shopify's answer to a missing or wrong access token (HTTP 401).
pub const INVALID_TOKEN_BODY: &str =
    r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#;

/// How the simulator behaves.
///
/// `Default` gives the documented Shopify limits and the demo credentials: access token
/// [`DEMO_ACCESS_TOKEN`] (`shpat_omnisync_demo_0123456789abcdef`), webhook secret
/// [`DEMO_WEBHOOK_SECRET`], shop domain [`DEMO_SHOP_DOMAIN`], shop currency NOK,
/// locations `gid://shopify/Location/1`, `/2` and `/3`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The access token accepted in `X-Shopify-Access-Token`.
    pub access_token: String,
    /// The shop's name (`shop { name }`).
    pub shop_name: String,
    /// The shop currency (`shop { currencyCode }`); all prices are in it.
    pub currency: Currency,
    /// The shop's location gids.
    pub locations: Vec<String>,
    /// Cost bucket size. Default 2000: what Shopify reports as `maximumAvailable` on
    /// Standard plans today (the documentation gives only the restore rate: unconfirmed).
    pub bucket_size: f64,
    /// Cost points restored per second. Default 100 (Standard plan, documented).
    pub restore_rate: f64,
    /// The single-query cost limit. Default 1000 (documented).
    pub max_query_cost: usize,
    /// The longest input array (`quantities`, `variants`). Default 250 (documented).
    pub max_input_array: usize,
    /// The largest `first:` a connection accepts. Default 250 (documented).
    pub max_page_size: usize,
    /// How many status reads a bulk operation takes to complete: it answers `RUNNING`
    /// until then. Default 2.
    pub bulk_polls_to_complete: u32,
    /// Bulk queries that may run at once. Default 5 (API 2026-01 and later).
    pub max_concurrent_bulk_queries: usize,
    /// The app's client secret webhooks are signed with (`X-Shopify-Hmac-Sha256`).
    /// Default [`DEMO_WEBHOOK_SECRET`].
    pub webhook_secret: String,
    /// `X-Shopify-Shop-Domain` of webhooks. Default [`DEMO_SHOP_DOMAIN`].
    pub shop_domain: String,
    /// How webhooks are delivered: timeouts and bounded retries.
    pub webhook_delivery: DeliveryOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            access_token: DEMO_ACCESS_TOKEN.to_string(),
            shop_name: "omnisync demo shop".to_string(),
            currency: Currency::NOK,
            locations: (1..=3).map(|n| gid("Location", n)).collect(),
            bucket_size: 2000.0,
            restore_rate: 100.0,
            max_query_cost: 1000,
            max_input_array: 250,
            max_page_size: 250,
            bulk_polls_to_complete: 2,
            max_concurrent_bulk_queries: 5,
            webhook_secret: DEMO_WEBHOOK_SECRET.to_string(),
            shop_domain: DEMO_SHOP_DOMAIN.to_string(),
            webhook_delivery: DeliveryOptions::default(),
        }
    }
}

impl SimOptions {
    /// Adapter settings that work against a simulator with these options at `base_url`:
    /// the literal demo token and webhook secret (so the adapter verifies this simulator's
    /// webhooks), the same currency and limits, fast bulk polling and a request budget that
    /// does not slow tests down.
    pub fn settings(&self, base_url: &str) -> Settings {
        let mut s = Settings::new(base_url, SecretRef::Literal(self.access_token.clone()));
        s.webhook_secret = Some(SecretRef::Literal(self.webhook_secret.clone()));
        s.currency = self.currency;
        s.max_input_array = self.max_input_array;
        s.max_query_cost = u32::try_from(self.max_query_cost).unwrap_or(u32::MAX);
        s.inventory_levels_per_variant = self.locations.len().clamp(1, 250);
        s.bulk_poll_interval_ms = 5;
        s.bulk_timeout_secs = 60;
        s.request_timeout_secs = 10;
        s.requests_per_second = 500;
        s.request_burst = 1000;
        s
    }
}

/// Per-request data shared with the schema.
#[derive(Debug)]
pub(crate) struct RequestInfo {
    api_version: String,
    base_url: String,
    idempotency_key: Mutex<Option<String>>,
    requested: Mutex<Option<usize>>,
    charged: Mutex<Option<usize>>,
}

impl RequestInfo {
    fn new(api_version: String, base_url: String) -> Self {
        RequestInfo {
            api_version,
            base_url,
            idempotency_key: Mutex::new(None),
            requested: Mutex::new(None),
            charged: Mutex::new(None),
        }
    }

    fn set_idempotency_key(&self, key: String) {
        *lock(&self.idempotency_key) = Some(key);
    }

    fn take_idempotency_key(&self) -> Option<String> {
        lock(&self.idempotency_key).take()
    }

    fn set_requested(&self, cost: usize) {
        *lock(&self.requested) = Some(cost);
    }

    fn set_charged(&self, cost: usize) {
        *lock(&self.charged) = Some(cost);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One bulk operation.
#[derive(Debug)]
struct BulkOp {
    query: String,
    status: BulkOperationStatus,
    polls: u32,
    jsonl: Option<Bytes>,
    objects: u64,
    roots: u64,
    sig: String,
}

/// Remembered idempotent requests: key → (parameters, answer).
#[derive(Debug, Default)]
struct IdempotencyStore {
    answers: HashMap<String, (String, InventorySetQuantitiesPayload)>,
    order: VecDeque<String>,
}

/// Most idempotency keys remembered.
const IDEMPOTENCY_CAP: usize = 100_000;
/// Bulk results kept (older ones expire, as Shopify's do after seven days).
const BULK_RESULTS_KEPT: usize = 4;

/// State shared by the HTTP handlers, the schema and the admin API.
pub(crate) struct Shared {
    options: SimOptions,
    catalog: Mutex<Catalog>,
    bucket: Mutex<LeakyBucket>,
    bulk: Mutex<BTreeMap<u64, BulkOp>>,
    idempotency: Mutex<IdempotencyStore>,
    ids: AtomicU64,
    faults: Faults,
    counters: SimCounters,
    webhooks: Dispatcher<ShopifyProvider>,
}

impl Shared {
    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    fn bucket(&self) -> MutexGuard<'_, LeakyBucket> {
        lock(&self.bucket)
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn idempotent_replay(
        &self,
        key: &str,
        print: &str,
    ) -> Option<Result<InventorySetQuantitiesPayload, ()>> {
        let store = lock(&self.idempotency);
        let (seen, answer) = store.answers.get(key)?;
        Some(if seen == print {
            Ok(answer.clone())
        } else {
            Err(())
        })
    }

    fn remember_idempotent(
        &self,
        key: String,
        print: String,
        payload: InventorySetQuantitiesPayload,
    ) {
        let mut store = lock(&self.idempotency);
        if store
            .answers
            .insert(key.clone(), (print, payload))
            .is_none()
        {
            store.order.push_back(key);
        }
        while store.order.len() > IDEMPOTENCY_CAP {
            if let Some(old) = store.order.pop_front() {
                store.answers.remove(&old);
            }
        }
    }

    fn bulk_view(&self, id: u64, op: &BulkOp, base_url: &str) -> BulkOperation {
        let done = op.status == BulkOperationStatus::Completed;
        BulkOperation {
            id: async_graphql::ID(gid("BulkOperation", id)),
            status: op.status,
            error_code: None,
            object_count: UnsignedInt64(if done { op.objects } else { 0 }),
            root_object_count: UnsignedInt64(if done { op.roots } else { 0 }),
            file_size: op
                .jsonl
                .as_ref()
                .filter(|_| done)
                .map(|j| UnsignedInt64(j.len() as u64)),
            url: (done && op.objects > 0 && op.jsonl.is_some())
                .then(|| format!("{base_url}/bulk-results/{id}.jsonl?sig={}", op.sig)),
            partial_data_url: None,
            query: op.query.clone(),
            kind: BulkOperationType::Query,
        }
    }

    fn start_bulk(
        &self,
        query: &str,
        base_url: &str,
    ) -> Result<BulkOperation, (BulkOperationUserErrorCode, String)> {
        let mut ops = lock(&self.bulk);
        let running: Vec<u64> = ops
            .iter()
            .filter(|(_, op)| {
                matches!(
                    op.status,
                    BulkOperationStatus::Created | BulkOperationStatus::Running
                )
            })
            .map(|(id, _)| *id)
            .collect();
        if running.len() >= self.options.max_concurrent_bulk_queries {
            let which = running
                .first()
                .map_or_else(String::new, |id| format!(": {}", gid("BulkOperation", *id)));
            return Err((
                BulkOperationUserErrorCode::OperationInProgress,
                format!(
                    "A bulk query operation for this app and shop is already in progress{which}"
                ),
            ));
        }
        let result = bulk::run(query, &self.catalog())
            .map_err(|m| (BulkOperationUserErrorCode::Invalid, m))?;
        let id = self.next_id();
        let sig = signature(id, &self.options.access_token);
        let op = BulkOp {
            query: query.to_string(),
            status: BulkOperationStatus::Created,
            polls: 0,
            jsonl: Some(Bytes::from(result.jsonl)),
            objects: result.objects,
            roots: result.roots,
            sig,
        };
        let view = self.bulk_view(id, &op, base_url);
        ops.insert(id, op);
        // Let old results expire so memory stays bounded.
        let with_results: Vec<u64> = ops
            .iter()
            .filter(|(_, op)| op.jsonl.is_some())
            .map(|(id, _)| *id)
            .collect();
        if with_results.len() > BULK_RESULTS_KEPT {
            for old in &with_results[..with_results.len() - BULK_RESULTS_KEPT] {
                if let Some(op) = ops.get_mut(old) {
                    op.jsonl = None;
                    op.status = BulkOperationStatus::Expired;
                }
            }
        }
        Ok(view)
    }

    /// A status read: counts a poll and completes the operation when due.
    fn observe_bulk(&self, id: u64, base_url: &str) -> Option<BulkOperation> {
        let mut ops = lock(&self.bulk);
        let op = ops.get_mut(&id)?;
        if matches!(
            op.status,
            BulkOperationStatus::Created | BulkOperationStatus::Running
        ) {
            op.polls += 1;
            op.status = if op.polls >= self.options.bulk_polls_to_complete {
                BulkOperationStatus::Completed
            } else {
                BulkOperationStatus::Running
            };
        }
        let op = ops.get(&id)?;
        Some(self.bulk_view(id, op, base_url))
    }

    fn latest_bulk(&self) -> Option<u64> {
        lock(&self.bulk).keys().next_back().copied()
    }
}

fn signature(id: u64, secret: &str) -> String {
    let digest = Sha256::digest(format!("bulk:{id}:{secret}").as_bytes());
    hex::encode(&digest[..16])
}

/// A running simulated shop.
pub struct Simulator {
    shared: Arc<Shared>,
    schema: SimSchema,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator with an empty catalog.
    pub fn new(options: SimOptions) -> Arc<Self> {
        let shared = Arc::new(Shared {
            catalog: Mutex::new(Catalog::new(options.currency, options.locations.clone())),
            bucket: Mutex::new(LeakyBucket::new(options.bucket_size, options.restore_rate)),
            bulk: Mutex::new(BTreeMap::new()),
            idempotency: Mutex::new(IdempotencyStore::default()),
            ids: AtomicU64::new(1),
            faults: Faults::default(),
            counters: SimCounters::default(),
            webhooks: Dispatcher::new(
                ShopifyProvider {
                    secret: options.webhook_secret.clone(),
                    shop_domain: options.shop_domain.clone(),
                    api_version: DEFAULT_API_VERSION.to_string(),
                },
                options.webhook_delivery.clone(),
            ),
            options,
        });
        let schema = schema::build(Arc::clone(&shared));
        Arc::new(Simulator { shared, schema })
    }

    /// The options it runs with.
    pub fn options(&self) -> &SimOptions {
        &self.shared.options
    }

    /// The API router (without faults or admin routes).
    fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/admin/api/{version}/graphql.json", post(graphql_endpoint))
            .route("/bulk-results/{file}", get(bulk_result))
            .with_state(Arc::clone(self))
    }

    /// The full router: the API behind the fault layer, plus the `/__sim` admin API and the
    /// webhook admin routes (`/__sim/webhooks/…`, `/__sim/orders`).
    pub fn router(self: &Arc<Self>) -> Router {
        fault_layer(self.api_router(), Arc::clone(self))
            .merge(admin_router(Arc::clone(self)))
            .merge(delivery::admin_routes(Arc::clone(self)))
    }

    /// Sells `quantity` units of `sku`, as a customer order would: lowers `available` at the
    /// first location (in [`SimOptions::locations`] order) holding at least `quantity`, then
    /// emits `orders/create` followed by `inventory_levels/update`. `false` (and nothing
    /// changes) for an unknown SKU, a quantity below 1, or when no location holds enough.
    pub fn sell(&self, sku: &str, quantity: i64) -> bool {
        if quantity < 1 {
            return false;
        }
        let shared = &self.shared;
        let mut catalog = shared.catalog();
        let Some(v) = catalog.by_sku_mut(sku) else {
            return false;
        };
        let enough = |l: &String| v.levels.get(l).is_some_and(|q| *q >= quantity);
        let location = shared
            .options
            .locations
            .iter()
            .find(|l| enough(l))
            .or_else(|| v.levels.keys().find(|l| enough(l)))
            .cloned();
        let Some(location) = location else {
            return false;
        };
        let left = v.levels.get(&location).copied().unwrap_or(0) - quantity;
        v.levels.insert(location.clone(), left);
        let hooks = &shared.webhooks;
        if !hooks.wants(events::ORDERS_CREATE) && !hooks.wants(events::INVENTORY_LEVELS_UPDATE) {
            return true;
        }
        let sold = v.clone();
        let order = shared.next_id();
        let line = shared.next_id();
        shared.webhooks.emit(events::ORDERS_CREATE, |at| {
            events::order(&catalog, order, line, &sold, quantity, at)
        });
        shared.webhooks.emit(events::INVENTORY_LEVELS_UPDATE, |at| {
            events::inventory_level(sold.item, &location, left, at)
        });
        true
    }
}

/// The webhook controls ([`WebhookAdmin::subscribe`] and the rest): topics are Shopify
/// topic names such as `inventory_levels/update`.
impl WebhookAdmin for Simulator {
    type Provider = ShopifyProvider;
    fn webhooks(&self) -> &Dispatcher<ShopifyProvider> {
        &self.shared.webhooks
    }
    fn sell(&self, sku: &str, quantity: i64) -> bool {
        Simulator::sell(self, sku, quantity)
    }
}

/// Starts a simulator on `addr` (use `127.0.0.1:0` for an ephemeral port).
pub async fn start(
    addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<(Arc<Simulator>, SimServer)> {
    let sim = Simulator::new(options);
    let server = SimServer::start(sim.router(), addr).await?;
    Ok((sim, server))
}

#[derive(Deserialize)]
struct GraphqlBody {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn graphql_endpoint(
    State(sim): State<Arc<Simulator>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &sim.shared;
    let token_ok = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t == shared.options.access_token);
    if !token_ok {
        return json_response(StatusCode::UNAUTHORIZED, INVALID_TOKEN_BODY.to_string());
    }
    let Ok(request) = serde_json::from_slice::<GraphqlBody>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "errors": { "query": "Required parameter missing or invalid" } }).to_string(),
        );
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let info = Arc::new(RequestInfo::new(version.clone(), format!("http://{host}")));
    let mut gql = async_graphql::Request::new(request.query).data(Arc::clone(&info));
    if let Some(vars) = request.variables.filter(|v| !v.is_null()) {
        gql = gql.variables(async_graphql::Variables::from_json(vars));
    }
    if let Some(name) = request.operation_name {
        gql = gql.operation_name(name);
    }
    let response = sim.schema.execute(gql).await;
    let mut value = match serde_json::to_value(&response) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "errors": [{ "message": format!("simulator could not encode the answer: {e}") }] }).to_string(),
            );
        }
    };
    let status = shared.bucket().status();
    let requested = *lock(&info.requested);
    let charged = *lock(&info.charged);
    if let Some(obj) = value.as_object_mut() {
        if obj.get("data").is_some_and(serde_json::Value::is_null) {
            obj.remove("data");
        }
        let extensions = obj.entry("extensions").or_insert_with(|| json!({}));
        if let Some(ext) = extensions.as_object_mut() {
            ext.insert(
                "cost".into(),
                json!({
                    "requestedQueryCost": requested,
                    "actualQueryCost": charged,
                    "throttleStatus": {
                        "maximumAvailable": status.maximum_available,
                        "currentlyAvailable": status.currently_available,
                        "restoreRate": status.restore_rate,
                    }
                }),
            );
        }
    }
    let mut resp = json_response(StatusCode::OK, value.to_string());
    if let Ok(v) = HeaderValue::from_str(&version) {
        resp.headers_mut().insert("X-Shopify-API-Version", v);
    }
    resp
}

#[derive(Deserialize)]
struct SigQuery {
    #[serde(default)]
    sig: String,
}

async fn bulk_result(
    State(sim): State<Arc<Simulator>>,
    Path(file): Path<String>,
    Query(q): Query<SigQuery>,
) -> Response {
    let denied = || {
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access denied.</Message></Error>",
        )
            .into_response()
    };
    let Some(id) = file
        .strip_suffix(".jsonl")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return denied();
    };
    let ops = lock(&sim.shared.bulk);
    match ops.get(&id) {
        Some(op) if op.sig == q.sig => match &op.jsonl {
            Some(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jsonl")],
                body.clone(),
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
            )
                .into_response(),
        },
        _ => denied(),
    }
}

impl SimControl for Simulator {
    fn kind(&self) -> &'static str {
        crate::KIND
    }

    fn seed(&self, records: Vec<SimRecord>) {
        self.shared.catalog().seed(records);
    }

    fn records(&self) -> Vec<SimRecord> {
        self.shared.catalog().records()
    }

    fn record(&self, sku: &str) -> Option<SimRecord> {
        let catalog = self.shared.catalog();
        catalog.by_sku(sku).map(|v| catalog.to_record(v))
    }

    fn set_offer(&self, sku: &str, offer: Offer) -> bool {
        let mut catalog = self.shared.catalog();
        let Some(v) = catalog.by_sku_mut(sku) else {
            return false;
        };
        let (price, compare_at) = money_from_offer(&offer);
        v.price = price.minor;
        v.compare_at = compare_at.map(|m| m.minor);
        let product = v.product;
        self.shared.webhooks.emit(events::PRODUCTS_UPDATE, |at| {
            events::product(&catalog, product, at).unwrap_or_default()
        });
        true
    }

    fn set_stock(&self, sku: &str, location: &str, quantity: i64) -> bool {
        if !self.shared.options.locations.iter().any(|l| l == location) {
            return false;
        }
        let mut catalog = self.shared.catalog();
        let Some(v) = catalog.by_sku_mut(sku) else {
            return false;
        };
        v.levels.insert(location.to_string(), quantity);
        let item = v.item;
        self.shared
            .webhooks
            .emit(events::INVENTORY_LEVELS_UPDATE, |at| {
                events::inventory_level(item, location, quantity, at)
            });
        true
    }

    fn remove(&self, sku: &str) -> bool {
        let mut catalog = self.shared.catalog();
        let Some(product) = catalog.by_sku(sku).map(|v| v.product) else {
            return false;
        };
        catalog.remove(sku);
        if catalog.has_product(product) {
            self.shared.webhooks.emit(events::PRODUCTS_UPDATE, |at| {
                events::product(&catalog, product, at).unwrap_or_default()
            });
        } else {
            self.shared.webhooks.emit(events::PRODUCTS_DELETE, |_| {
                events::product_deleted(product)
            });
        }
        true
    }

    fn add(&self, record: SimRecord) {
        let mut catalog = self.shared.catalog();
        let sku = record.sku.clone();
        let existed = catalog.by_sku(&sku).is_some();
        catalog.add(record);
        if let Some(product) = catalog.by_sku(&sku).map(|v| v.product) {
            let topic = if existed {
                events::PRODUCTS_UPDATE
            } else {
                events::PRODUCTS_CREATE
            };
            self.shared.webhooks.emit(topic, |at| {
                events::product(&catalog, product, at).unwrap_or_default()
            });
        }
    }

    fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    fn counters(&self) -> &SimCounters {
        &self.shared.counters
    }
}
