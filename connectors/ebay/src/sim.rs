//! A loopback eBay: the Sell Inventory and Sell Feed API calls the adapter makes, over an
//! in-memory catalog, with eBay's limits and error answers.
//!
//! | call | behaves like eBay |
//! |---|---|
//! | `GET /sell/inventory/v1/inventory_item?limit=&offset=` | `offset` is the page number; `limit` 1–[`SimOptions::max_page_size`] else 400 errorId 25706; `next` only when there is a next page; `size` = number of pages (as documented) |
//! | `POST /sell/inventory/v1/bulk_get_inventory_item` | ≤ [`SimOptions::max_batch`] SKUs else 400 25727; duplicates 400 25734; unknown SKU → that entry 404 with 25702; HTTP 207 when mixed |
//! | `GET /sell/inventory/v1/offer?sku=` | the SKU's one published fixed-price offer; 404 with 25713 when there is none |
//! | `POST /sell/inventory/v1/bulk_update_price_quantity` | ≤ [`SimOptions::max_batch`] requests else 400 25727; per request: unknown SKU 25702, negative quantity 25004, price ≤ 0 or too precise 25003, wrong currency 25709, foreign offer id 25713 → that request's entries 400, the others applied; HTTP 207 when mixed |
//! | `POST /sell/feed/v1/inventory_task` | `LMS_ACTIVE_INVENTORY_REPORT`, schema `1.0`, `X-EBAY-C-MARKETPLACE-ID` required (400 160027); 202 + `Location`; more unfinished tasks than [`SimOptions::max_concurrent_report_tasks`] → 409 160024 |
//! | `GET /sell/feed/v1/inventory_task/{id}` | `QUEUED`, `IN_PROCESS`, then `COMPLETED` once [`SimOptions::report_delay`] has passed |
//! | `GET /sell/feed/v1/task/{id}/download_result_file` | a ZIP holding the report XML, snapshotted when the task was created |
//! | `GET /commerce/notification/v1/public_key/{kid}` | `{"key", "algorithm": "ECDSA", "digest"}` for the application (or user) token; 404 errorId 195001 for another id |
//! | `POST /identity/v1/oauth2/token` | `Authorization: Basic base64(`[`SimOptions::client_id`]`:`[`SimOptions::client_secret`]`)` else 401 `{"error": "invalid_client"}`; `grant_type=client_credentials` (scope `…/oauth/api_scope`) → an application token, `grant_type=refresh_token` ([`SimOptions::refresh_token`], scopes among [`SimOptions::user_scopes`]) → a user token, both `{"access_token", "expires_in", "token_type"}` living [`SimOptions::token_ttl`]; 400 `invalid_grant` / `invalid_scope` / `unsupported_grant_type` / `invalid_request` with eBay's `error_description` |
//! | `GET`, `POST /commerce/notification/v1/destination`; `GET`, `PUT`, `DELETE …/destination/{id}` | application token only (a user token: 403 errorId 1100); `limit` 10–100 (400 195004) and `continuation_token` paging; create and update first make eBay's `GET {endpoint}?challenge_code=…` and refuse with 409 195020 when the answer is wrong or missing (the reason in `longMessage`); 409 195021 for an endpoint that has a destination; 400 195016–195019 for a bad name, endpoint, status or verification token (32–80 of `[A-Za-z0-9_-]`); 201 + `Location`; delete of a destination in use: 409 195024 |
//! | `GET`, `POST /commerce/notification/v1/subscription`; `GET`, `DELETE …/subscription/{id}`; `POST …/{id}/enable`, `…/{id}/disable` | a user token with `…/commerce.notification.subscription` for the topics in [`SimOptions::user_topics`], an application token for those in [`SimOptions::application_topics`] (else 403 195011); each token kind sees its own subscriptions; unknown topic 400 195027, bad status 195006, unknown destination 195007, payload other than `JSON` / `1.0` / `HTTPS` 195009 / 195008 / 195010; a second subscription of a topic 409 195012; enabling towards a destination that is not enabled 409 195015; 201 + `Location` |
//!
//! Every Sell API call needs `Authorization: Bearer` with a user token: the static
//! [`SimOptions::access_token`], or an unexpired token minted with the refresh token grant
//! (whose scopes must include `…/sell.inventory`, else 403 errorId 1100 "Access denied");
//! else 401 errorId 1001 "Invalid access token", domain `OAuth` (counted:
//! [`Simulator::unauthorized_answers`]). [`Simulator::expire_tokens`] (`POST
//! /__sim/oauth/expire`) expires every minted token at once, and
//! [`Simulator::revoke_refresh_token`] (`POST /__sim/oauth/revoke`) makes the refresh token
//! grant fail, for rehearsing refresh and refusal. Calls count against a per-second limit and
//! a call quota per window (else 429 errorId 2001 "Too many requests", domain `ACCESS`). The
//! simulator sends `Retry-After` with its 429s; whether eBay does is unconfirmed (the adapter
//! falls back to `Settings::throttle_retry_after_secs`). The token endpoint and the
//! Notification API are outside those limits (eBay's numbers for them are unconfirmed).
//!
//! **Notifications.** Like eBay's Commerce Notification API it POSTs signed notifications to
//! the endpoints subscribed with [`Simulator::subscribe`] (or `POST
//! /__sim/webhooks/subscriptions`): a [`Simulator::sell`] (or `POST /__sim/orders`) takes the
//! units off the listing's quantity and emits [`SimOptions::order_topic`]
//! (`ORDER_CONFIRMATION`) for the line item. The body is eBay's envelope (`metadata`,
//! `notification` with `notificationId`, `eventDate`, `publishDate`, `publishAttemptCount`,
//! `data`), `data` being `{"orderId", "lineItems": [{"lineItemId", "legacyItemId", "sku",
//! "quantity"}]}` (the Fulfillment API's names: eBay's own `data` fields for this topic are
//! unconfirmed, see [`crate::webhook`]). Each delivery carries `X-EBAY-SIGNATURE`, signed
//! with a P-256 key generated per simulator (or from [`SimOptions::notification_key_seed`])
//! exactly as eBay signs: base64 JSON `{"alg":"ecdsa","kid","signature","digest"}`, the
//! signature DER over [`SimOptions::notification_digest`] (SHA-1, as in eBay's own test data)
//! of the raw body. `GET /commerce/notification/v1/public_key/{kid}` serves the key as
//! `{"key": "-----BEGIN PUBLIC KEY-----…-----END PUBLIC KEY-----", "algorithm": "ECDSA",
//! "digest"}` (404 errorId 195001 for an unknown id) to the application token (or the user
//! token). Delivery is the SDK's [`Dispatcher`]: bounded retries, and drop / duplicate /
//! delay / reorder faults ([`Simulator::set_webhook_faults`], `POST /__sim/webhooks/faults`).
//! [`Simulator::validate_endpoint`] makes eBay's `challenge_code` request to an endpoint and
//! checks its answer. An `ENABLED` Notification API subscription (`POST
//! /commerce/notification/v1/subscription`) to an `ENABLED` destination subscribes the
//! destination's endpoint to its topic in the same dispatcher (and disabling or deleting it
//! unsubscribes the endpoint from the topic). eBay accepts only `https` endpoints on public
//! addresses; the simulator takes any absolute http(s) URL, so tests can use loopback. Seeding
//! and hand edits emit nothing (no price or quantity topic is confirmed for sellers).
//!
//! State: listings in a `Vec` sorted by SKU (binary search by SKU, a page is a slice: O(page
//! size) per request), so 100,000 listings seed and page quickly. Every listing has one
//! published fixed-price offer; stock lives under the location code `"default"` and prices
//! in [`SimOptions::currency`], as the adapter reports them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use omnisync_sdk::sim::delivery::{self, Dispatcher, OutEvent, Provider, WebhookAdmin};
use omnisync_sdk::sim::{
    Faults, SimControl, SimCounters, SimRecord, SimServer, admin_router, fault_layer,
};
use omnisync_sdk::{Currency, Money, Offer, SecretRef, StockLevel};
use p256::ecdsa::SigningKey;
use serde::Serialize;
use serde_json::json;

pub use omnisync_sdk::sim::delivery::{DeliveryOptions, Subscription, WebhookFaults, WebhookStats};

use crate::KIND;
use crate::api::{
    self, ACTIVE_INVENTORY_REPORT, Amount, Availability, BulkGetInventoryItem, BulkPriceQuantity,
    BulkPriceQuantityResponse, CreateInventoryTaskRequest, ErrorDetail, ErrorsBody,
    GetInventoryItemResponse, InventoryItem, MARKETPLACE_HEADER, PriceQuantity,
    PriceQuantityResponse, Product, ShipToLocationAvailability,
};
use crate::notification::{
    self as notif, CreateSubscriptionRequest, DeliveryConfig, Destination, DestinationRequest,
    NOTIFICATION, Subscription as NotificationSubscription, SubscriptionPayloadDetail,
};
use crate::oauth::{
    APPLICATION_SCOPE, NOTIFICATION_SUBSCRIPTION_SCOPE, OAuthError, SELL_INVENTORY_SCOPE,
    TOKEN_PATH, TokenResponse,
};
use crate::report::{self, ReportLine};
use crate::settings::Settings;
use crate::webhook::{
    self, CHALLENGE_PARAM, ORDER_CONFIRMATION, PUBLIC_KEY_PATH, PublicKeyResponse, SignatureDigest,
    SignatureHeader,
};

/// The application token the simulator accepts for `getPublicKey` by default.
pub const DEMO_APPLICATION_TOKEN: &str = "ebay-sim-app-token";
/// The notification public key id by default.
pub const DEMO_KEY_ID: &str = "6b9c0e7a-4f1d-4c3e-9a57-0e1b2c3d4e5f";
/// A verification token of eBay's shape (32–80 characters), for demos and tests.
pub const DEMO_VERIFICATION_TOKEN: &str = "omnisync-demo-verification-token-0123456789";
/// The OAuth client id the simulator accepts by default.
pub const DEMO_CLIENT_ID: &str = "omnisync-sim-PRD-0123456789-abcdef01";
/// The OAuth client secret the simulator accepts by default.
pub const DEMO_CLIENT_SECRET: &str = "PRD-sim-client-secret-0123456789";
/// The refresh token the simulator accepts by default.
pub const DEMO_REFRESH_TOKEN: &str = "v^1.1#i^1#sim-refresh-token";
/// eBay's application-level topic of account deletion requests (an application-based topic
/// in the simulator).
pub const MARKETPLACE_ACCOUNT_DELETION: &str = "MARKETPLACE_ACCOUNT_DELETION";

/// How the simulator behaves. `Default` gives eBay's documented limits and the demo
/// credentials: the access token `ebay-sim-token` on marketplace `EBAY_DE`, in EUR.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The OAuth user access token accepted as `Authorization: Bearer …`. Demo:
    /// `ebay-sim-token`.
    pub access_token: String,
    /// The marketplace (`EBAY_DE`).
    pub marketplace_id: String,
    /// The marketplace currency (EUR).
    pub currency: Currency,
    /// Largest `limit` of `getInventoryItems` (200, current documentation).
    pub max_page_size: u32,
    /// Most requests in one `bulk_update_price_quantity` or `bulk_get_inventory_item` (25).
    pub max_batch: usize,
    /// API requests per second before 429 (`None`: no limit). eBay documents no per-second
    /// limit for these calls; the default, 50, is the simulator's own.
    pub requests_per_second: Option<u32>,
    /// API requests per [`SimOptions::quota_window`] before 429 (`None`: no quota). eBay's
    /// quotas are per app per day; the Inventory API's number is unconfirmed (a figure of
    /// 2,000,000 circulates, which is the default).
    pub quota_per_window: Option<u64>,
    /// The quota window (one day).
    pub quota_window: Duration,
    /// How long an active inventory report task takes (100 ms).
    pub report_delay: Duration,
    /// Unfinished report tasks allowed at once before 409 errorId 160024 (1; eBay's number is
    /// unconfirmed).
    pub max_concurrent_report_tasks: usize,
    /// The application token `getPublicKey` accepts (besides the user token). Demo:
    /// [`DEMO_APPLICATION_TOKEN`].
    pub application_token: String,
    /// The `kid` of the notification signing key ([`DEMO_KEY_ID`]).
    pub notification_key_id: String,
    /// Seed of the notification signing key (its private scalar is SHA-256 of the seed);
    /// `None` (default): a new key per simulator.
    pub notification_key_seed: Option<[u8; 32]>,
    /// The digest notifications are signed over, as `getPublicKey` reports it. Default SHA-1
    /// (eBay's own test data); SHA-256 is accepted by the handler as well.
    pub notification_digest: SignatureDigest,
    /// The topic of a sale ([`ORDER_CONFIRMATION`]).
    pub order_topic: String,
    /// How notifications are delivered: timeouts and bounded retries.
    pub webhook_delivery: DeliveryOptions,
    /// The application's OAuth client id ([`DEMO_CLIENT_ID`]).
    pub client_id: String,
    /// The application's OAuth client secret ([`DEMO_CLIENT_SECRET`]).
    pub client_secret: String,
    /// The seller's refresh token ([`DEMO_REFRESH_TOKEN`]).
    pub refresh_token: String,
    /// The scopes the seller consented to: a refresh token grant may ask for these (all of
    /// them when it names none). Default `…/sell.inventory` and
    /// `…/commerce.notification.subscription`.
    pub user_scopes: Vec<String>,
    /// How long minted tokens live (eBay: 7200 s).
    pub token_ttl: Duration,
    /// Notification topics whose subscriptions take a user token (with
    /// `…/commerce.notification.subscription`). Default: `ORDER_CONFIRMATION`.
    pub user_topics: Vec<String>,
    /// Notification topics whose subscriptions take an application token. Default:
    /// [`MARKETPLACE_ACCOUNT_DELETION`].
    pub application_topics: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            access_token: "ebay-sim-token".to_string(),
            marketplace_id: "EBAY_DE".to_string(),
            currency: Currency::EUR,
            max_page_size: 200,
            max_batch: 25,
            requests_per_second: Some(50),
            quota_per_window: Some(2_000_000),
            quota_window: Duration::from_secs(86_400),
            report_delay: Duration::from_millis(100),
            max_concurrent_report_tasks: 1,
            application_token: DEMO_APPLICATION_TOKEN.to_string(),
            notification_key_id: DEMO_KEY_ID.to_string(),
            notification_key_seed: None,
            notification_digest: SignatureDigest::Sha1,
            order_topic: ORDER_CONFIRMATION.to_string(),
            webhook_delivery: DeliveryOptions::default(),
            client_id: DEMO_CLIENT_ID.to_string(),
            client_secret: DEMO_CLIENT_SECRET.to_string(),
            refresh_token: DEMO_REFRESH_TOKEN.to_string(),
            user_scopes: vec![
                SELL_INVENTORY_SCOPE.to_string(),
                NOTIFICATION_SUBSCRIPTION_SCOPE.to_string(),
            ],
            token_ttl: Duration::from_secs(7200),
            user_topics: vec![ORDER_CONFIRMATION.to_string()],
            application_topics: vec![MARKETPLACE_ACCOUNT_DELETION.to_string()],
        }
    }
}

impl SimOptions {
    /// Adapter settings that work against a simulator with these options at `base_url`
    /// (a literal token, short report polling, the simulator's own per-second limit as the budget).
    pub fn settings(&self, base_url: &str) -> Settings {
        let mut s = self.tuned(
            Settings::new(SecretRef::Literal(self.access_token.clone())),
            base_url,
        );
        s.webhook_application_token = Some(SecretRef::Literal(self.application_token.clone()));
        s
    }

    /// Adapter settings whose tokens the connector mints from this simulator: the client id
    /// and secret and the refresh token (scopes `…/sell.inventory` and
    /// `…/commerce.notification.subscription`); the application token is minted with the
    /// client credentials grant.
    pub fn oauth_settings(&self, base_url: &str) -> Settings {
        let mut s = self.tuned(
            Settings::with_refresh_token(
                self.client_id.clone(),
                SecretRef::Literal(self.client_secret.clone()),
                SecretRef::Literal(self.refresh_token.clone()),
            ),
            base_url,
        );
        s.oauth_scopes = vec![
            SELL_INVENTORY_SCOPE.to_string(),
            NOTIFICATION_SUBSCRIPTION_SCOPE.to_string(),
        ];
        s
    }

    /// [`SimOptions::oauth_settings`] with notifications on (see
    /// [`SimOptions::webhook_settings`]).
    pub fn oauth_webhook_settings(
        &self,
        base_url: &str,
        endpoint: &str,
        verification_token: &str,
    ) -> Settings {
        let mut s = self.oauth_settings(base_url);
        s.webhook_endpoint = Some(endpoint.to_string());
        s.webhook_verification_token = Some(SecretRef::Literal(verification_token.to_string()));
        s.webhook_order_topics = vec![self.order_topic.clone()];
        s
    }

    /// The tuning every simulator settings share.
    fn tuned(&self, mut s: Settings, base_url: &str) -> Settings {
        s.base_url = base_url.to_string();
        s.marketplace_id = self.marketplace_id.clone();
        s.currency = self.currency;
        s.page_size = self.max_page_size.clamp(1, 100);
        s.max_batch = self.max_batch.clamp(1, 25);
        s.max_read_batch = self.max_batch.clamp(1, 25);
        s.report_poll_interval_ms = 20;
        s.report_timeout_secs = 30;
        s.report_download_timeout_secs = 30;
        s.throttle_retry_after_secs = 1;
        s.request_timeout_secs = 10;
        // Pace like a client that knows the account's limit instead of learning it from 429s.
        // (a little under it, with small bursts, so window edges do not trip it).
        let rate = self.requests_per_second.unwrap_or(10_000);
        s.requests_per_second = (rate * 4 / 5).max(1);
        s.burst = (rate / 10).max(1);
        s
    }

    /// [`SimOptions::settings`] with notifications on: deliveries are expected at
    /// `endpoint` (the daemon's `…/webhooks/{connector id}`), validated with
    /// `verification_token` (32–80 letters, digits, `_`, `-`; e.g.
    /// [`DEMO_VERIFICATION_TOKEN`]).
    pub fn webhook_settings(
        &self,
        base_url: &str,
        endpoint: &str,
        verification_token: &str,
    ) -> Settings {
        let mut s = self.settings(base_url);
        s.webhook_endpoint = Some(endpoint.to_string());
        s.webhook_verification_token = Some(SecretRef::Literal(verification_token.to_string()));
        s.webhook_order_topics = vec![self.order_topic.clone()];
        s
    }
}

/// Signs deliveries as eBay does. (No `Debug`: it holds the private key.)
pub struct EbayProvider {
    key: SigningKey,
    kid: String,
    digest: SignatureDigest,
}

impl Provider for EbayProvider {
    fn headers(&self, event: &OutEvent, _delivery_id: &str) -> Vec<(&'static str, String)> {
        let header = SignatureHeader {
            alg: "ecdsa".to_string(),
            kid: self.kid.clone(),
            signature: webhook::sign(&self.key, self.digest, &event.body),
            digest: Some(self.digest.as_str().to_string()),
        };
        vec![("X-EBAY-SIGNATURE", header.encode())]
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    metadata: Metadata<'a>,
    notification: Notification<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    topic: &'a str,
    schema_version: &'a str,
    deprecated: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    notification_id: &'a str,
    event_date: &'a str,
    publish_date: &'a str,
    publish_attempt_count: u32,
    data: serde_json::Value,
}

/// The signing key: SHA-256 of the seed as the private scalar (a new seed in the rare case
/// the hash is not a valid scalar).
fn signing_key(seed: [u8; 32]) -> SigningKey {
    use sha2::Digest as _;
    let mut material = seed;
    loop {
        let candidate: [u8; 32] = sha2::Sha256::digest(material).into();
        if let Ok(key) = SigningKey::from_slice(&candidate) {
            return key;
        }
        material = candidate;
    }
}

fn fresh_seed() -> [u8; 32] {
    use sha2::Digest as _;
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = sha2::Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.finalize().into()
}

/// One listing: an inventory item and its offer.
#[derive(Debug, Clone)]
struct Item {
    sku: String,
    title: String,
    quantity: i64,
    offer: SimOffer,
}

#[derive(Debug, Clone)]
struct SimOffer {
    offer_id: String,
    listing_id: String,
    price: Money,
    /// Set by `availableQuantity`; otherwise the offer follows the item's quantity.
    available_quantity: Option<i64>,
}

impl Item {
    fn listed_quantity(&self) -> i64 {
        match self.offer.available_quantity {
            Some(q) => q.min(self.quantity),
            None => self.quantity,
        }
    }
}

struct Task {
    created: Instant,
    creation_date: String,
    listing_format: Option<String>,
    file: Bytes,
}

#[derive(Default)]
struct SimState {
    /// Sorted by SKU.
    items: Vec<Item>,
    next_id: u64,
    tasks: HashMap<String, Task>,
    next_task: u64,
}

impl SimState {
    fn find(&self, sku: &str) -> Result<usize, usize> {
        self.items.binary_search_by(|i| i.sku.as_str().cmp(sku))
    }

    fn new_offer(&mut self, price: Money) -> SimOffer {
        self.next_id += 1;
        SimOffer {
            offer_id: (5_000_000_000u64 + self.next_id).to_string(),
            listing_id: (110_000_000_000u64 + self.next_id).to_string(),
            price,
            available_quantity: None,
        }
    }

    fn item_from(&mut self, record: SimRecord) -> Item {
        let quantity = record
            .stock
            .get(StockLevel::DEFAULT_LOCATION)
            .copied()
            .unwrap_or(0);
        let offer = self.new_offer(record.offer.effective());
        Item {
            sku: record.sku,
            title: record.title,
            quantity,
            offer,
        }
    }
}

struct RateWindow {
    second_start: Instant,
    second_count: u32,
    window_start: Instant,
    window_count: u64,
}

/// The simulator's state and admin surface.
pub struct Simulator {
    options: SimOptions,
    state: Mutex<SimState>,
    rate: Mutex<RateWindow>,
    faults: Faults,
    counters: SimCounters,
    webhooks: Dispatcher<EbayProvider>,
    public_key: PublicKeyResponse,
    key_fetches: AtomicU64,
    notifications: AtomicU64,
    nonce: u64,
    oauth: Mutex<OAuthState>,
    user_grants: AtomicU64,
    application_grants: AtomicU64,
    unauthorized: AtomicU64,
    notification_api: Mutex<NotificationState>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("marketplace_id", &self.options.marketplace_id)
            .finish_non_exhaustive()
    }
}

/// Starts a simulator on `addr` (`127.0.0.1:0` for an ephemeral port): the API behind the
/// fault layer, plus the `/__sim` admin API and the webhook admin routes
/// (`/__sim/webhooks/…`, `/__sim/orders`).
pub async fn start(
    addr: SocketAddr,
    options: SimOptions,
) -> std::io::Result<(Arc<Simulator>, SimServer)> {
    let sim = Arc::new(Simulator::new(options));
    let app = fault_layer(sim.api_router(), sim.clone())
        .merge(admin_router(sim.clone()))
        .merge(delivery::admin_routes(sim.clone()))
        .merge(oauth_admin_routes(sim.clone()));
    let server = SimServer::start(app, addr).await?;
    Ok((sim, server))
}

impl Simulator {
    /// An empty simulator.
    pub fn new(options: SimOptions) -> Self {
        let now = Instant::now();
        let seed = options.notification_key_seed.unwrap_or_else(fresh_seed);
        let key = signing_key(seed);
        let public_key = PublicKeyResponse {
            key: webhook::public_key_pem(key.verifying_key()),
            algorithm: "ECDSA".to_string(),
            digest: options.notification_digest.as_str().to_string(),
        };
        let webhooks = Dispatcher::new(
            EbayProvider {
                key,
                kid: options.notification_key_id.clone(),
                digest: options.notification_digest,
            },
            options.webhook_delivery.clone(),
        );
        let nonce = u64::from_le_bytes(fresh_seed()[..8].try_into().unwrap_or([0; 8]));
        Simulator {
            webhooks,
            public_key,
            key_fetches: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            nonce,
            oauth: Mutex::new(OAuthState::default()),
            user_grants: AtomicU64::new(0),
            application_grants: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            notification_api: Mutex::new(NotificationState::default()),
            options,
            state: Mutex::new(SimState::default()),
            rate: Mutex::new(RateWindow {
                second_start: now,
                second_count: 0,
                window_start: now,
                window_count: 0,
            }),
            faults: Faults::default(),
            counters: SimCounters::default(),
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    /// The offer id of a SKU's listing.
    pub fn offer_id(&self, sku: &str) -> Option<String> {
        let state = self.lock();
        state
            .find(sku)
            .ok()
            .map(|i| state.items[i].offer.offer_id.clone())
    }

    /// Report tasks created so far.
    pub fn report_tasks(&self) -> usize {
        self.lock().tasks.len()
    }

    /// The listing (item) id of a SKU.
    pub fn listing_id(&self, sku: &str) -> Option<String> {
        let state = self.lock();
        state
            .find(sku)
            .ok()
            .map(|i| state.items[i].offer.listing_id.clone())
    }

    /// The notification public key as `getPublicKey` serves it.
    pub fn public_key(&self) -> &PublicKeyResponse {
        &self.public_key
    }

    /// `getPublicKey` calls answered with the key so far.
    pub fn public_key_fetches(&self) -> u64 {
        self.key_fetches.load(Ordering::Relaxed)
    }

    /// eBay's endpoint validation: `GET url?challenge_code=…`, which must answer 200 with
    /// `{"challengeResponse": hex(SHA-256(code + verification_token + url))}`. `Err` says
    /// what was wrong.
    pub async fn validate_endpoint(
        &self,
        url: &str,
        verification_token: &str,
    ) -> Result<(), String> {
        let n = self.notifications.fetch_add(1, Ordering::Relaxed);
        let code = format!("{:016x}{:08x}", self.nonce, n);
        let client = reqwest::Client::builder()
            .timeout(self.options.webhook_delivery.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(url)
            .query(&[(CHALLENGE_PARAM, code.as_str())])
            .send()
            .await
            .map_err(|e| format!("the endpoint did not answer: {}", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the endpoint answered {status}"));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("the answer is not JSON: {e}"))?;
        let expected = webhook::challenge_response(&code, verification_token, url);
        match body.get("challengeResponse").and_then(|v| v.as_str()) {
            Some(answer) if answer == expected => Ok(()),
            Some(_) => Err("challengeResponse does not match".to_string()),
            None => Err("the answer has no challengeResponse".to_string()),
        }
    }

    /// Sells `quantity` units of `sku`, as a buyer's checkout would: takes them off the
    /// listing's quantity (and off the offer's `availableQuantity` when one is set), then
    /// emits [`SimOptions::order_topic`] for the line item. `false` (and nothing changes)
    /// for an unknown SKU, a quantity below 1, or more than the listing shows.
    pub fn sell(&self, sku: &str, quantity: i64) -> bool {
        if quantity < 1 {
            return false;
        }
        let (listing_id, line) = {
            let mut state = self.lock();
            let Ok(i) = state.find(sku) else {
                return false;
            };
            if state.items[i].listed_quantity() < quantity {
                return false;
            }
            state.next_id += 1;
            let line = state.next_id;
            let item = &mut state.items[i];
            item.quantity -= quantity;
            if let Some(q) = item.offer.available_quantity.as_mut() {
                *q -= quantity;
            }
            (item.offer.listing_id.clone(), line)
        };
        let topic = self.options.order_topic.clone();
        if !self.webhooks.wants(&topic) {
            return true;
        }
        let n = self.notifications.fetch_add(1, Ordering::Relaxed);
        let notification_id = self.notification_id(n);
        let order_id = format!(
            "{:02}-{:05}-{:05}",
            10 + n % 90,
            line % 100_000,
            n % 100_000
        );
        let data = json!({
            "orderId": order_id,
            "lineItems": [{
                "lineItemId": (10_000_000_000u64 + line).to_string(),
                "legacyItemId": listing_id,
                "sku": sku,
                "quantity": quantity,
            }],
        });
        self.webhooks.emit(&topic, |at| {
            serde_json::to_vec(&Envelope {
                metadata: Metadata {
                    topic: &topic,
                    schema_version: "1.0",
                    deprecated: false,
                },
                notification: Notification {
                    notification_id: &notification_id,
                    event_date: at,
                    publish_date: at,
                    publish_attempt_count: 1,
                    data,
                },
            })
            .unwrap_or_default()
        });
        true
    }

    /// A notification id in eBay's shape (two UUIDs joined by `_`).
    fn notification_id(&self, n: u64) -> String {
        let a = self.nonce;
        let b = self.nonce.rotate_left(29) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}_{:08x}-{:04x}-4{:03x}-b{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (n >> 48) as u16 & 0xfff,
            n & 0xffff_ffff_ffff,
            (b >> 32) as u32,
            (b >> 16) as u16,
            (b & 0xfff) as u16,
            (b >> 52) as u16 & 0xfff,
            b & 0xffff_ffff_ffff,
        )
    }

    /// The API routes (without fault layer and admin API; [`start`] adds both).
    pub fn api_router(self: &Arc<Self>) -> Router {
        let inv = api::INVENTORY;
        let feed = api::FEED;
        Router::new()
            .route(&format!("{inv}/inventory_item"), get(get_inventory_items))
            .route(
                &format!("{inv}/bulk_get_inventory_item"),
                post(bulk_get_inventory_item),
            )
            .route(&format!("{inv}/offer"), get(get_offers))
            .route(
                &format!("{inv}/bulk_update_price_quantity"),
                post(bulk_update_price_quantity),
            )
            .route(
                &format!("{feed}/inventory_task"),
                post(create_inventory_task),
            )
            .route(
                &format!("{feed}/inventory_task/{{task_id}}"),
                get(get_inventory_task),
            )
            .route(
                &format!("{feed}/task/{{task_id}}/download_result_file"),
                get(get_result_file),
            )
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .route(
                &format!("{PUBLIC_KEY_PATH}/{{public_key_id}}"),
                get(get_public_key),
            )
            .route(TOKEN_PATH, post(mint_token))
            .route(
                &format!("{NOTIFICATION}/destination"),
                get(list_destinations).post(create_destination),
            )
            .route(
                &format!("{NOTIFICATION}/destination/{{destination_id}}"),
                get(get_destination)
                    .put(update_destination)
                    .delete(delete_destination),
            )
            .route(
                &format!("{NOTIFICATION}/subscription"),
                get(list_subscriptions).post(create_subscription),
            )
            .route(
                &format!("{NOTIFICATION}/subscription/{{subscription_id}}"),
                get(get_subscription).delete(delete_subscription),
            )
            .route(
                &format!("{NOTIFICATION}/subscription/{{subscription_id}}/enable"),
                post(enable_subscription),
            )
            .route(
                &format!("{NOTIFICATION}/subscription/{{subscription_id}}/disable"),
                post(disable_subscription),
            )
            .with_state(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request against the limits; `Some(seconds to wait)` when it is over.
    fn take_budget(&self) -> Option<u64> {
        let mut r = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(rps) = self.options.requests_per_second {
            if now.duration_since(r.second_start) >= Duration::from_secs(1) {
                r.second_start = now;
                r.second_count = 0;
            }
            if r.second_count >= rps {
                return Some(1);
            }
        }
        if let Some(quota) = self.options.quota_per_window {
            let elapsed = now.duration_since(r.window_start);
            if elapsed >= self.options.quota_window {
                r.window_start = now;
                r.window_count = 0;
            } else if r.window_count >= quota {
                let left = self.options.quota_window - elapsed;
                return Some(left.as_secs() + u64::from(left.subsec_nanos() > 0));
            }
        }
        r.second_count += 1;
        r.window_count += 1;
        None
    }

    fn inventory_item_json(&self, item: &Item) -> serde_json::Value {
        let mut v = serde_json::to_value(InventoryItem {
            sku: Some(item.sku.clone()),
            locale: Some(self.locale()),
            product: Some(Product {
                title: Some(item.title.clone()).filter(|t| !t.is_empty()),
                ..Product::default()
            }),
            availability: Some(Availability {
                ship_to_location_availability: Some(ShipToLocationAvailability {
                    quantity: Some(item.quantity),
                }),
            }),
        })
        .unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("condition".into(), json!("NEW"));
        }
        v
    }

    fn locale(&self) -> String {
        match self.options.marketplace_id.as_str() {
            "EBAY_US" => "en_US",
            "EBAY_GB" => "en_GB",
            "EBAY_FR" => "fr_FR",
            "EBAY_IT" => "it_IT",
            "EBAY_ES" => "es_ES",
            _ => "de_DE",
        }
        .to_string()
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn ebay_error(status: StatusCode, errors: Vec<ErrorDetail>) -> Response {
    (status, axum::Json(ErrorsBody { errors })).into_response()
}

fn inventory_error(id: i64, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail::new(id, "API_INVENTORY", "REQUEST", message)
}

fn feed_error(id: i64, category: &str, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail::new(id, "API_FEED", category, message)
}

fn invalid_json() -> Response {
    let mut e = ErrorDetail::new(
        api::ERR_INVALID_REQUEST,
        "ACCESS",
        "REQUEST",
        "Invalid request",
    );
    e.long_message =
        Some("The request has errors. For help, see the documentation for this API.".to_string());
    ebay_error(StatusCode::BAD_REQUEST, vec![e])
}

/// eBay's 401 for a missing, unknown or expired token (counted).
fn invalid_token(sim: &Simulator) -> Response {
    sim.unauthorized.fetch_add(1, Ordering::Relaxed);
    let mut e = ErrorDetail::new(
        api::ERR_INVALID_TOKEN,
        "OAuth",
        "REQUEST",
        "Invalid access token",
    );
    e.long_message = Some(
        "Invalid access token. Check the value of the Authorization HTTP request header."
            .to_string(),
    );
    ebay_error(StatusCode::UNAUTHORIZED, vec![e])
}

/// eBay's 403 for a token of the wrong kind or without the scope a call needs.
fn access_denied(why: &str) -> Response {
    let mut e = ErrorDetail::new(api::ERR_ACCESS_DENIED, "ACCESS", "REQUEST", "Access denied");
    e.long_message = Some(format!(
        "Insufficient permissions to fulfill the request. {why}"
    ));
    ebay_error(StatusCode::FORBIDDEN, vec![e])
}

/// Auth (a user token with `sell.inventory`), then the rate limits.
async fn guard(State(sim): State<Arc<Simulator>>, request: Request, next: Next) -> Response {
    match sim.bearer(request.headers()) {
        Some(b) if b.kind == TokenKind::User => {
            if !b.has(SELL_INVENTORY_SCOPE) {
                return access_denied(
                    "The access token lacks the scope https://api.ebay.com/oauth/api_scope/sell.inventory.",
                );
            }
        }
        _ => return invalid_token(&sim),
    }
    if let Some(wait) = sim.take_budget() {
        sim.counters.throttled();
        let mut e = ErrorDetail::new(
            api::ERR_TOO_MANY_REQUESTS,
            "ACCESS",
            "REQUEST",
            "Too many requests.",
        );
        e.long_message = Some("The request limit has been reached for the resource.".to_string());
        let mut response = ebay_error(StatusCode::TOO_MANY_REQUESTS, vec![e]);
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    next.run(request).await
}

/// `getPublicKey`: the application token (or the user token), then the key by id.
async fn get_public_key(
    State(sim): State<Arc<Simulator>>,
    Path(kid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if sim.bearer(&headers).is_none() {
        return invalid_token(&sim);
    }
    if kid != sim.options.notification_key_id {
        return ebay_error(
            StatusCode::NOT_FOUND,
            vec![ErrorDetail::new(
                195001,
                "API_NOTIFICATION",
                "REQUEST",
                "The specified public key ID was not found.",
            )],
        );
    }
    sim.key_fetches.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, axum::Json(sim.public_key.clone())).into_response()
}

fn pagination_error(message: String) -> Response {
    ebay_error(
        StatusCode::BAD_REQUEST,
        vec![inventory_error(
            api::ERR_PAGINATION,
            format!("You have provided invalid pagination values. {message}."),
        )],
    )
}

async fn get_inventory_items(
    State(sim): State<Arc<Simulator>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let max = sim.options.max_page_size;
    let limit = match q.get("limit").map(|v| v.trim().parse::<u32>()) {
        None => 25.min(max),
        Some(Ok(l)) if (1..=max).contains(&l) => l,
        Some(_) => return pagination_error(format!("limit must be an integer from 1 to {max}")),
    };
    let offset = match q.get("offset").map(|v| v.trim().parse::<u64>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => {
            return pagination_error("offset must be an integer of 0 or more".to_string());
        }
    };
    let state = sim.lock();
    let total = state.items.len() as u64;
    let start = offset.saturating_mul(u64::from(limit));
    let end = start.saturating_add(u64::from(limit)).min(total);
    let page: Vec<serde_json::Value> = if start < total {
        state.items[start as usize..end as usize]
            .iter()
            .map(|i| sim.inventory_item_json(i))
            .collect()
    } else {
        Vec::new()
    };
    drop(state);
    let path = format!("{}/inventory_item", api::INVENTORY);
    let mut body = json!({
        "href": format!("{path}?limit={limit}&offset={offset}"),
        "limit": limit,
        "size": total.div_ceil(u64::from(limit)),
        "total": total,
        "inventoryItems": page,
    });
    if end < total {
        body["next"] = json!(format!("{path}?limit={limit}&offset={}", offset + 1));
    }
    if offset > 0 {
        body["prev"] = json!(format!("{path}?limit={limit}&offset={}", offset - 1));
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// eBay's refusal of a bulk call with no entries (`empty` is that call's message) or more
/// than `max`; `None` when `len` is fine.
fn batch_size_error(len: usize, max: usize, empty: &str) -> Option<Response> {
    let (id, message) = if len == 0 {
        (api::ERR_INVALID_VALUE, empty.to_string())
    } else if len > max {
        (
            api::ERR_TOO_MANY_ITEMS,
            format!("The number of InventoryItems in the request cannot exceed {max}."),
        )
    } else {
        return None;
    };
    Some(ebay_error(
        StatusCode::BAD_REQUEST,
        vec![inventory_error(id, message)],
    ))
}

async fn bulk_get_inventory_item(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<BulkGetInventoryItem>(&body) else {
        return invalid_json();
    };
    if let Some(refusal) = batch_size_error(
        req.requests.len(),
        sim.options.max_batch,
        "Invalid request. Invalid value for field requests",
    ) {
        return refusal;
    }
    let mut seen = HashSet::new();
    if !req.requests.iter().all(|r| seen.insert(r.sku.as_str())) {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![inventory_error(
                25734,
                "SKU should be unique in the request.",
            )],
        );
    }
    let state = sim.lock();
    let responses: Vec<GetInventoryItemResponse> = req
        .requests
        .iter()
        .map(|r| match state.find(&r.sku) {
            Ok(i) => GetInventoryItemResponse {
                sku: Some(r.sku.clone()),
                status_code: Some(200),
                inventory_item: Some(sim.inventory_item_json(&state.items[i])),
                ..Default::default()
            },
            Err(_) => GetInventoryItemResponse {
                sku: Some(r.sku.clone()),
                status_code: Some(404),
                errors: vec![inventory_error(
                    api::ERR_SKU_NOT_AVAILABLE,
                    format!("SKU {} is not available in the system", r.sku),
                )],
                ..Default::default()
            },
        })
        .collect();
    drop(state);
    let status = if responses.iter().all(|r| r.status_code == Some(200)) {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (status, axum::Json(json!({ "responses": responses }))).into_response()
}

async fn get_offers(
    State(sim): State<Arc<Simulator>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(sku) = q.get("sku").filter(|s| !s.is_empty()) else {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![inventory_error(
                api::ERR_INVALID_VALUE,
                "Invalid value for sku.",
            )],
        );
    };
    let other_marketplace = q
        .get("marketplace_id")
        .is_some_and(|m| *m != sim.options.marketplace_id);
    let state = sim.lock();
    let found = match state.find(sku) {
        Ok(i) if !other_marketplace => Some(state.items[i].clone()),
        _ => None,
    };
    drop(state);
    let Some(item) = found else {
        return ebay_error(
            StatusCode::NOT_FOUND,
            vec![inventory_error(
                api::ERR_OFFER_NOT_AVAILABLE,
                format!("This Offer is not available : {sku}."),
            )],
        );
    };
    let offer = json!({
        "offerId": item.offer.offer_id,
        "sku": item.sku,
        "marketplaceId": sim.options.marketplace_id,
        "format": "FIXED_PRICE",
        "availableQuantity": item.listed_quantity(),
        "pricingSummary": {"price": {
            "value": item.offer.price.major_string(),
            "currency": item.offer.price.currency.code(),
        }},
        "listingDuration": "GTC",
        "status": "PUBLISHED",
        "listing": {"listingId": item.offer.listing_id, "listingStatus": "ACTIVE", "soldQuantity": 0},
    });
    let body = json!({
        "href": format!("{}/offer?sku={}", api::INVENTORY, urlencoding::encode(sku)),
        "limit": 100,
        "size": 1,
        "total": 1,
        "offers": [offer],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Checks one request of `bulk_update_price_quantity` against the catalog.
fn check_request(
    sim: &Simulator,
    state: &SimState,
    req: &PriceQuantity,
) -> Result<(usize, Option<Money>), Vec<ErrorDetail>> {
    let mut errors = Vec::new();
    let Some(sku) = req.sku.as_deref().filter(|s| !s.is_empty()) else {
        return Err(vec![inventory_error(
            api::ERR_INVALID_VALUE,
            "Invalid value for sku.",
        )]);
    };
    let Ok(index) = state.find(sku) else {
        return Err(vec![inventory_error(
            api::ERR_SKU_NOT_AVAILABLE,
            format!("SKU {sku} is not available in the system"),
        )]);
    };
    if req.ship_to_location_availability.is_none() && req.offers.is_empty() {
        errors.push(inventory_error(
            api::ERR_INVALID_VALUE,
            "Invalid value for shipToLocationAvailability. Either shipToLocationAvailability or offers is required.",
        ));
    }
    if let Some(ship) = &req.ship_to_location_availability {
        match ship.quantity {
            Some(q) if q >= 0 => {}
            Some(_) => errors.push(inventory_error(
                api::ERR_INVALID_QUANTITY,
                "Invalid quantity. The quantity must be 0 or more.",
            )),
            None => errors.push(inventory_error(
                api::ERR_INVALID_VALUE,
                "Invalid value for shipToLocationAvailability.quantity.",
            )),
        }
    }
    let mut new_price = None;
    let item = &state.items[index];
    for offer in &req.offers {
        if offer.offer_id != item.offer.offer_id {
            errors.push(inventory_error(
                api::ERR_OFFER_NOT_AVAILABLE,
                format!("This Offer is not available : {}.", offer.offer_id),
            ));
            continue;
        }
        if offer.available_quantity.is_none() && offer.price.is_none() {
            errors.push(inventory_error(
                api::ERR_INVALID_VALUE,
                "Invalid value for offers. availableQuantity or price is required.",
            ));
        }
        if offer.available_quantity.is_some_and(|q| q < 0) {
            errors.push(inventory_error(
                api::ERR_INVALID_QUANTITY,
                "Invalid quantity. The availableQuantity must be 0 or more.",
            ));
        }
        if let Some(Amount { value, currency }) = &offer.price {
            if currency != sim.options.currency.code() {
                errors.push(inventory_error(
                    api::ERR_INVALID_VALUE,
                    format!(
                        "Invalid value for price.currency. The marketplace currency is {}.",
                        sim.options.currency
                    ),
                ));
            } else {
                match Money::parse_major(value, sim.options.currency) {
                    Ok(m) if m.minor > 0 => new_price = Some(m),
                    _ => errors.push(inventory_error(
                        api::ERR_INVALID_PRICE,
                        format!("Invalid price. {value:?} is not a price greater than 0."),
                    )),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok((index, new_price))
    } else {
        Err(errors)
    }
}

async fn bulk_update_price_quantity(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<BulkPriceQuantity>(&body) else {
        return invalid_json();
    };
    if let Some(refusal) = batch_size_error(
        req.requests.len(),
        sim.options.max_batch,
        "Invalid value for requests.",
    ) {
        return refusal;
    }
    sim.counters.write(req.requests.len());
    let mut responses = Vec::new();
    let mut state = sim.lock();
    for r in &req.requests {
        let entries = |status: u16, errors: Vec<ErrorDetail>| -> Vec<PriceQuantityResponse> {
            if r.offers.is_empty() {
                vec![PriceQuantityResponse {
                    status_code: Some(status),
                    sku: r.sku.clone(),
                    errors,
                    ..Default::default()
                }]
            } else {
                r.offers
                    .iter()
                    .map(|o| PriceQuantityResponse {
                        status_code: Some(status),
                        sku: r.sku.clone(),
                        offer_id: Some(o.offer_id.clone()),
                        errors: errors.clone(),
                        ..Default::default()
                    })
                    .collect()
            }
        };
        match check_request(&sim, &state, r) {
            Err(errors) => responses.extend(entries(400, errors)),
            Ok((index, price)) => {
                let item = &mut state.items[index];
                if let Some(q) = r
                    .ship_to_location_availability
                    .as_ref()
                    .and_then(|s| s.quantity)
                {
                    item.quantity = q;
                }
                for o in &r.offers {
                    if let Some(q) = o.available_quantity {
                        item.offer.available_quantity = Some(q);
                    }
                }
                if let Some(p) = price {
                    item.offer.price = p;
                }
                responses.extend(entries(200, Vec::new()));
            }
        }
    }
    drop(state);
    let status = if responses.iter().all(|r| r.status_code == Some(200)) {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (status, axum::Json(BulkPriceQuantityResponse { responses })).into_response()
}

async fn create_inventory_task(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let marketplace_ok = headers
        .get(MARKETPLACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m == sim.options.marketplace_id);
    if !marketplace_ok {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![feed_error(
                160027,
                "REQUEST",
                "The X-EBAY-C-MARKETPLACE-ID header is missing or invalid.",
            )],
        );
    }
    let Ok(req) = serde_json::from_slice::<CreateInventoryTaskRequest>(&body) else {
        return invalid_json();
    };
    if req.feed_type.as_deref() != Some(ACTIVE_INVENTORY_REPORT) {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![feed_error(
                160017,
                "REQUEST",
                "The 'feedType' is missing or invalid.",
            )],
        );
    }
    if req.schema_version.as_deref() != Some("1.0") {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![feed_error(
                160018,
                "REQUEST",
                "The 'schemaVersion' is invalid.",
            )],
        );
    }
    let listing_format = req.filter_criteria.and_then(|f| f.listing_format);
    if let Some(f) = &listing_format
        && f != "FIXED_PRICE"
        && f != "AUCTION"
    {
        return ebay_error(
            StatusCode::BAD_REQUEST,
            vec![feed_error(
                160019,
                "REQUEST",
                format!("The 'filterCriteria' is invalid. listingFormat {f} is not supported."),
            )],
        );
    }

    // Snapshot under the lock; build the file outside it.
    let (task_id, lines) = {
        let mut state = sim.lock();
        let running = state
            .tasks
            .values()
            .filter(|t| t.created.elapsed() < sim.options.report_delay)
            .count();
        if running >= sim.options.max_concurrent_report_tasks {
            return ebay_error(
                StatusCode::CONFLICT,
                vec![feed_error(
                    160024,
                    "BUSINESS",
                    "You have reached the maximum number of feed tasks that can be queued or \
                     processed concurrently. Wait for current tasks to complete before adding \
                     tasks. For more information, see the documentation for this API.",
                )],
            );
        }
        state.next_task += 1;
        let task_id = format!("task-40-{:010}", state.next_task);
        // Every simulated offer is fixed price: an AUCTION report is empty.
        let lines: Vec<ReportLine> = if listing_format.as_deref() == Some("AUCTION") {
            Vec::new()
        } else {
            state
                .items
                .iter()
                .map(|i| ReportLine {
                    sku: i.sku.clone(),
                    item_id: Some(i.offer.listing_id.clone()),
                    price: Some(i.offer.price.major_string()),
                    currency: Some(i.offer.price.currency.code().to_string()),
                    quantity: Some(i.listed_quantity()),
                })
                .collect()
        };
        // Reserve the id so a concurrent create counts this task as running.
        state.tasks.insert(
            task_id.clone(),
            Task {
                created: Instant::now(),
                creation_date: now_rfc3339(),
                listing_format: listing_format.clone(),
                file: Bytes::new(),
            },
        );
        (task_id, lines)
    };
    let xml = report::write(&lines, &now_rfc3339());
    let file = match report::zip(&xml, &format!("{task_id}.xml")) {
        Ok(f) => Bytes::from(f),
        Err(e) => {
            return ebay_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![feed_error(
                    160001,
                    "APPLICATION",
                    format!("There was a problem with an eBay internal system or process. {e}"),
                )],
            );
        }
    };
    if let Some(t) = sim.lock().tasks.get_mut(&task_id) {
        t.file = file;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let location = format!("{host}{}/inventory_task/{task_id}", api::FEED);
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn task_status(sim: &Simulator, task: &Task) -> &'static str {
    let age = task.created.elapsed();
    if age >= sim.options.report_delay {
        "COMPLETED"
    } else if age >= sim.options.report_delay / 2 {
        "IN_PROCESS"
    } else {
        "QUEUED"
    }
}

fn no_task(task_id: &str) -> Response {
    ebay_error(
        StatusCode::NOT_FOUND,
        vec![feed_error(
            160003,
            "REQUEST",
            format!("Task {task_id} does not exist."),
        )],
    )
}

async fn get_inventory_task(
    State(sim): State<Arc<Simulator>>,
    Path(task_id): Path<String>,
) -> Response {
    let state = sim.lock();
    let Some(task) = state.tasks.get(&task_id) else {
        return no_task(&task_id);
    };
    let status = task_status(&sim, task);
    let mut body = json!({
        "taskId": task_id,
        "status": status,
        "feedType": ACTIVE_INVENTORY_REPORT,
        "creationDate": task.creation_date,
        "schemaVersion": "1.0",
        "detailHref": format!("{}/inventory_task/{task_id}", api::FEED),
    });
    if status == "COMPLETED" {
        body["completionDate"] = json!(task.creation_date);
    }
    if let Some(f) = &task.listing_format {
        body["filterCriteria"] = json!({ "listingFormat": f });
    }
    drop(state);
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn get_result_file(
    State(sim): State<Arc<Simulator>>,
    Path(task_id): Path<String>,
) -> Response {
    let state = sim.lock();
    let Some(task) = state.tasks.get(&task_id) else {
        return no_task(&task_id);
    };
    if task_status(&sim, task) != "COMPLETED" || task.file.is_empty() {
        return ebay_error(
            StatusCode::NOT_FOUND,
            vec![feed_error(
                160014,
                "REQUEST",
                format!("No file found for task ID {task_id}."),
            )],
        );
    }
    let file = task.file.clone();
    drop(state);
    let disposition = format!("attachment; filename=\"{task_id}.zip\"");
    let mut response = (StatusCode::OK, file).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The admin view of a listing: the price in the marketplace currency, the quantity under
/// `"default"`.
fn sim_record(item: &Item) -> SimRecord {
    SimRecord {
        sku: item.sku.clone(),
        title: item.title.clone(),
        offer: Offer::regular(item.offer.price),
        stock: BTreeMap::from([(StockLevel::DEFAULT_LOCATION.to_string(), item.quantity)]),
    }
}

/// The webhook controls ([`WebhookAdmin::subscribe`] and the rest): topics are eBay topic
/// ids such as `ORDER_CONFIRMATION`. (eBay validates an endpoint when its destination is
/// created: see [`Simulator::validate_endpoint`].)
impl WebhookAdmin for Simulator {
    type Provider = EbayProvider;
    fn webhooks(&self) -> &Dispatcher<EbayProvider> {
        &self.webhooks
    }
    fn sell(&self, sku: &str, quantity: i64) -> bool {
        Simulator::sell(self, sku, quantity)
    }
}

impl SimControl for Simulator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn seed(&self, records: Vec<SimRecord>) {
        // Last record per SKU wins; the map sorts.
        let unique: BTreeMap<String, SimRecord> =
            records.into_iter().map(|r| (r.sku.clone(), r)).collect();
        let mut state = self.lock();
        state.tasks.clear();
        let mut items = Vec::with_capacity(unique.len());
        for record in unique.into_values() {
            items.push(state.item_from(record));
        }
        state.items = items;
    }

    fn records(&self) -> Vec<SimRecord> {
        self.lock().items.iter().map(sim_record).collect()
    }

    fn record(&self, sku: &str) -> Option<SimRecord> {
        let state = self.lock();
        state.find(sku).ok().map(|i| sim_record(&state.items[i]))
    }

    fn set_offer(&self, sku: &str, offer: Offer) -> bool {
        let mut state = self.lock();
        match state.find(sku) {
            Ok(i) => {
                state.items[i].offer.price = offer.effective();
                true
            }
            Err(_) => false,
        }
    }

    fn set_stock(&self, sku: &str, location: &str, quantity: i64) -> bool {
        if location != StockLevel::DEFAULT_LOCATION {
            return false;
        }
        let mut state = self.lock();
        match state.find(sku) {
            Ok(i) => {
                let item = &mut state.items[i];
                item.quantity = quantity;
                item.offer.available_quantity = None;
                true
            }
            Err(_) => false,
        }
    }

    fn remove(&self, sku: &str) -> bool {
        let mut state = self.lock();
        match state.find(sku) {
            Ok(i) => {
                state.items.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    fn add(&self, record: SimRecord) {
        let mut state = self.lock();
        match state.find(&record.sku) {
            Ok(i) => {
                let item = &mut state.items[i];
                item.title = record.title;
                item.quantity = record
                    .stock
                    .get(StockLevel::DEFAULT_LOCATION)
                    .copied()
                    .unwrap_or(0);
                item.offer.price = record.offer.effective();
                item.offer.available_quantity = None;
            }
            Err(i) => {
                let item = state.item_from(record);
                state.items.insert(i, item);
            }
        }
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }

    fn counters(&self) -> &SimCounters {
        &self.counters
    }
}

// ---- OAuth -----------------------------------------------------------------------------

/// The kind of an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A user token (the static access token, or minted with the refresh token grant).
    User,
    /// An application token (the static application token, or minted with the client
    /// credentials grant).
    Application,
}

/// A token the simulator accepted: its kind and, for minted ones, its scopes.
#[derive(Debug, Clone)]
struct Bearer {
    kind: TokenKind,
    /// `None` for the static tokens, which stand for every scope.
    scopes: Option<Vec<String>>,
}

impl Bearer {
    fn has(&self, scope: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == scope))
    }
}

struct Issued {
    kind: TokenKind,
    scopes: Vec<String>,
    expires: Instant,
}

#[derive(Default)]
struct OAuthState {
    issued: HashMap<String, Issued>,
    refresh_revoked: bool,
    next: u64,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(OAuthError {
            error: error.to_string(),
            error_description: Some(description.to_string()),
        }),
    )
        .into_response()
}

impl Simulator {
    /// The token of a request (`Authorization: Bearer …`), when it is one the simulator knows
    /// and it has not expired.
    fn bearer(&self, headers: &HeaderMap) -> Option<Bearer> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })?
            .trim();
        if token == self.options.access_token {
            return Some(Bearer {
                kind: TokenKind::User,
                scopes: None,
            });
        }
        if token == self.options.application_token {
            return Some(Bearer {
                kind: TokenKind::Application,
                scopes: None,
            });
        }
        let state = self.oauth.lock().unwrap_or_else(|p| p.into_inner());
        let issued = state.issued.get(token)?;
        (Instant::now() < issued.expires).then(|| Bearer {
            kind: issued.kind,
            scopes: Some(issued.scopes.clone()),
        })
    }

    fn issue(&self, kind: TokenKind, scopes: Vec<String>) -> String {
        let mut state = self.oauth.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.issued.retain(|_, t| t.expires > now);
        state.next += 1;
        let k = match kind {
            TokenKind::User => 'u',
            TokenKind::Application => 'a',
        };
        let token = format!("v^1.1#i^1#{k}^{}#t^{:016x}", state.next, self.nonce);
        state.issued.insert(
            token.clone(),
            Issued {
                kind,
                scopes,
                expires: now + self.options.token_ttl,
            },
        );
        token
    }

    /// Expires every token minted so far (the static tokens stay valid): the next call with
    /// one is answered 401.
    pub fn expire_tokens(&self) {
        let mut state = self.oauth.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for t in state.issued.values_mut() {
            t.expires = now;
        }
    }

    /// Revokes the refresh token: refresh token grants fail with `invalid_grant` from now on.
    pub fn revoke_refresh_token(&self) {
        self.oauth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refresh_revoked = true;
    }

    /// Tokens minted so far: (refresh token grants, client credentials grants).
    pub fn token_grants(&self) -> (u64, u64) {
        (
            self.user_grants.load(Ordering::Relaxed),
            self.application_grants.load(Ordering::Relaxed),
        )
    }

    /// The tokens minted so far and not expired (for tests that check they leak nowhere).
    pub fn live_tokens(&self) -> Vec<String> {
        let state = self.oauth.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state
            .issued
            .iter()
            .filter(|(_, t)| t.expires > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Requests answered 401 "Invalid access token" so far.
    pub fn unauthorized_answers(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }
}

/// `POST /identity/v1/oauth2/token`.
async fn mint_token(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let expected = format!("{}:{}", sim.options.client_id, sim.options.client_secret);
    if credentials.as_deref() != Some(expected.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let text = std::str::from_utf8(&body).unwrap_or("");
    let form: Option<HashMap<String, String>> =
        reqwest::Url::parse(&format!("http://form/?{text}"))
            .ok()
            .map(|u| u.query_pairs().into_owned().collect());
    let Some(form) = form.filter(|_| form_type) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request is missing a required parameter or malformed.",
        );
    };
    let scopes: Option<Vec<String>> = form
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect());
    let invalid_scope = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is invalid, unknown, malformed, or exceeds the scope granted to \
             the client",
        )
    };
    let (kind, scopes) = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => match scopes {
            Some(s) if !s.is_empty() && s.iter().all(|x| x == APPLICATION_SCOPE) => {
                (TokenKind::Application, s)
            }
            _ => return invalid_scope(),
        },
        Some("refresh_token") => {
            let revoked = sim
                .oauth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refresh_revoked;
            if revoked || form.get("refresh_token") != Some(&sim.options.refresh_token) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the provided authorization refresh token is invalid or was issued to \
                     another client",
                );
            }
            match scopes {
                None => (TokenKind::User, sim.options.user_scopes.clone()),
                Some(s)
                    if !s.is_empty() && s.iter().all(|x| sim.options.user_scopes.contains(x)) =>
                {
                    (TokenKind::User, s)
                }
                Some(_) => return invalid_scope(),
            }
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type in request is not supported by the authorization server",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "request is missing a required parameter or malformed.",
            );
        }
    };
    let token_type = match kind {
        TokenKind::User => {
            sim.user_grants.fetch_add(1, Ordering::Relaxed);
            "User Access Token"
        }
        TokenKind::Application => {
            sim.application_grants.fetch_add(1, Ordering::Relaxed);
            "Application Access Token"
        }
    };
    let token = sim.issue(kind, scopes);
    (
        StatusCode::OK,
        axum::Json(TokenResponse {
            access_token: token,
            expires_in: Some(sim.options.token_ttl.as_secs()),
            token_type: Some(token_type.to_string()),
            refresh_token: None,
        }),
    )
        .into_response()
}

/// The `/__sim/oauth/…` and `/__sim/notification` admin routes (never faulted):
///
/// | call | does |
/// |---|---|
/// | `POST /__sim/oauth/expire` | expire every minted token ([`Simulator::expire_tokens`]) |
/// | `POST /__sim/oauth/revoke` | revoke the refresh token ([`Simulator::revoke_refresh_token`]) |
/// | `GET /__sim/notification` | `{"destinations": […], "subscriptions": […]}` of the Notification API |
pub fn oauth_admin_routes(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route(
            "/__sim/oauth/expire",
            post(|State(s): State<Arc<Simulator>>| async move {
                s.expire_tokens();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__sim/oauth/revoke",
            post(|State(s): State<Arc<Simulator>>| async move {
                s.revoke_refresh_token();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__sim/notification",
            get(|State(s): State<Arc<Simulator>>| async move {
                axum::Json(json!({
                    "destinations": s.destinations(),
                    "subscriptions": s.notification_subscriptions(),
                }))
            }),
        )
        .with_state(sim)
}

// ---- Notification API: destinations and subscriptions ------------------------------------

#[derive(Debug, Clone)]
struct SimDestination {
    id: String,
    name: Option<String>,
    status: String,
    endpoint: String,
    verification_token: String,
}

impl SimDestination {
    fn wire(&self) -> Destination {
        Destination {
            destination_id: Some(self.id.clone()),
            name: self.name.clone(),
            status: Some(self.status.clone()),
            delivery_config: Some(DeliveryConfig {
                endpoint: Some(self.endpoint.clone()),
                verification_token: Some(self.verification_token.clone()),
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct SimSubscription {
    id: String,
    topic: String,
    status: String,
    destination_id: String,
    owner: TokenKind,
    payload: SubscriptionPayloadDetail,
    creation_date: String,
}

impl SimSubscription {
    fn wire(&self) -> NotificationSubscription {
        NotificationSubscription {
            subscription_id: Some(self.id.clone()),
            topic_id: Some(self.topic.clone()),
            status: Some(self.status.clone()),
            creation_date: Some(self.creation_date.clone()),
            payload: Some(self.payload.clone()),
            destination_id: Some(self.destination_id.clone()),
        }
    }
}

#[derive(Default)]
struct NotificationState {
    destinations: Vec<SimDestination>,
    subscriptions: Vec<SimSubscription>,
    next: u64,
}

fn notification_error(status: StatusCode, id: i64, message: impl Into<String>) -> Response {
    ebay_error(
        status,
        vec![ErrorDetail::new(id, "API_NOTIFICATION", "REQUEST", message)],
    )
}

/// A page of a notification list: `(limit, offset)` from the query, or eBay's refusal.
fn page_params(q: &HashMap<String, String>) -> Result<(usize, usize), Box<Response>> {
    let limit = match q.get("limit").map(|l| l.trim().parse::<usize>()) {
        None => 20,
        Some(Ok(l)) if (10..=100).contains(&l) => l,
        Some(_) => {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_INVALID_LIMIT,
                "Invalid limit. Supported ranges 10 - 100.",
            )));
        }
    };
    let offset = match q
        .get("continuation_token")
        .map(|c| c.trim().parse::<usize>())
    {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_INVALID_CONTINUATION,
                "Invalid continuation token.",
            )));
        }
    };
    Ok((limit, offset))
}

fn host_url(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default()
}

/// A 201 naming what was created.
fn created(headers: &HeaderMap, path: String) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}{path}", host_url(headers))) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A page of `items` as eBay lists them, under `key`.
fn list_page<T: Serialize>(
    headers: &HeaderMap,
    what: &str,
    key: &str,
    items: &[T],
    limit: usize,
    offset: usize,
) -> Response {
    let path = format!("{NOTIFICATION}/{what}");
    let end = offset.saturating_add(limit).min(items.len());
    let page = items.get(offset.min(items.len())..end).unwrap_or(&[]);
    let mut body = json!({
        "total": items.len(),
        "href": format!("{}{path}?limit={limit}&continuation_token={offset}", host_url(headers)),
        "limit": limit,
        key: page,
    });
    if end < items.len() {
        body["next"] = json!(format!(
            "{}{path}?limit={limit}&continuation_token={end}",
            host_url(headers)
        ));
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl Simulator {
    fn notification_state(&self) -> std::sync::MutexGuard<'_, NotificationState> {
        self.notification_api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The Notification API destinations, as `getDestinations` lists them.
    pub fn destinations(&self) -> Vec<Destination> {
        self.notification_state()
            .destinations
            .iter()
            .map(SimDestination::wire)
            .collect()
    }

    /// The Notification API subscriptions of both token kinds.
    pub fn notification_subscriptions(&self) -> Vec<NotificationSubscription> {
        self.notification_state()
            .subscriptions
            .iter()
            .map(SimSubscription::wire)
            .collect()
    }

    fn new_notification_id(&self, state: &mut NotificationState) -> String {
        state.next += 1;
        let n = state.next;
        let a = self.nonce.rotate_left(13) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (n >> 12) as u16 & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    /// Points the dispatcher at what the enabled subscriptions ask for, for these endpoints.
    fn sync_deliveries(&self, endpoints: &[String]) {
        let wanted: Vec<(String, Vec<String>)> = {
            let state = self.notification_state();
            endpoints
                .iter()
                .map(|url| {
                    let mut topics: Vec<String> = Vec::new();
                    for s in &state.subscriptions {
                        let to_url = state.destinations.iter().any(|d| {
                            d.id == s.destination_id
                                && d.endpoint == *url
                                && d.status == notif::ENABLED
                        });
                        if to_url && s.status == notif::ENABLED && !topics.contains(&s.topic) {
                            topics.push(s.topic.clone());
                        }
                    }
                    (url.clone(), topics)
                })
                .collect()
        };
        for (url, topics) in wanted {
            if !topics.is_empty() {
                self.webhooks.subscribe(url, topics);
            } else if self.webhooks.subscriptions().iter().any(|s| s.url == url) {
                // The dispatcher has no per-URL removal: keep the others.
                let keep: Vec<Subscription> = self
                    .webhooks
                    .subscriptions()
                    .into_iter()
                    .filter(|s| s.url != url)
                    .collect();
                self.webhooks.clear();
                for s in keep {
                    self.webhooks.subscribe(s.url, s.topics);
                }
            }
        }
    }

    /// The application token a destination call needs, or eBay's refusal.
    fn application_bearer(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        match self.bearer(headers) {
            None => Err(Box::new(invalid_token(self))),
            Some(b) if b.kind == TokenKind::Application && b.has(APPLICATION_SCOPE) => Ok(()),
            Some(_) => Err(Box::new(access_denied(
                "Destinations take an application access token (client credentials grant).",
            ))),
        }
    }

    /// The token a subscription call is made with, or eBay's refusal: an application token,
    /// or a user token with `commerce.notification.subscription`.
    fn subscription_bearer(&self, headers: &HeaderMap) -> Result<TokenKind, Box<Response>> {
        match self.bearer(headers) {
            None => Err(Box::new(invalid_token(self))),
            Some(b) if b.kind == TokenKind::Application => Ok(TokenKind::Application),
            Some(b) if b.has(NOTIFICATION_SUBSCRIPTION_SCOPE) => Ok(TokenKind::User),
            Some(_) => Err(Box::new(access_denied(
                "The access token lacks the scope \
                 https://api.ebay.com/oauth/api_scope/commerce.notification.subscription.",
            ))),
        }
    }

    /// Checks a destination request; the endpoint and token when it is good.
    fn check_destination(
        req: &DestinationRequest,
    ) -> Result<(String, String, String), Box<Response>> {
        if let Some(name) = &req.name
            && (name.chars().count() > 64 || name.contains(['<', '>']))
        {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_DESTINATION_NAME,
                "Invalid name. Markups or lengths greater than 64 not supported",
            )));
        }
        let status = req.status.clone().unwrap_or_default();
        if status != "ENABLED" && status != "DISABLED" {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_DESTINATION_STATUS,
                "Invalid or missing destination status. Supported values:[ENABLED,DISABLED]",
            )));
        }
        let config = req.delivery_config.clone().unwrap_or_default();
        let endpoint = config.endpoint.unwrap_or_default();
        let url_ok = reqwest::Url::parse(&endpoint)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !url_ok {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_ENDPOINT,
                "Invalid or missing endpoint.",
            )));
        }
        let token = config.verification_token.unwrap_or_default();
        let token_ok = (32..=80).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token_ok {
            return Err(Box::new(notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_VERIFICATION_TOKEN,
                "Invalid or missing verification token for this endpoint.",
            )));
        }
        Ok((status, endpoint, token))
    }

    /// eBay's challenge to `endpoint`, as a refusal when it fails.
    async fn challenge(&self, endpoint: &str, token: &str) -> Result<(), Box<Response>> {
        self.validate_endpoint(endpoint, token)
            .await
            .map_err(|why| {
                let mut e = ErrorDetail::new(
                    notif::ERR_CHALLENGE_FAILED,
                    "API_NOTIFICATION",
                    "REQUEST",
                    "Challenge verification failed for requested endpoint",
                );
                e.long_message = Some(format!(
                    "Challenge verification failed for requested endpoint: {why}"
                ));
                Box::new(ebay_error(StatusCode::CONFLICT, vec![e]))
            })
    }
}

fn destination_exists() -> Response {
    notification_error(
        StatusCode::CONFLICT,
        notif::ERR_DESTINATION_EXISTS,
        "Destination exists for this endpoint",
    )
}

fn no_destination() -> Response {
    notification_error(
        StatusCode::NOT_FOUND,
        notif::ERR_DESTINATION_ID,
        "Invalid or missing destination id.",
    )
}

fn no_subscription() -> Response {
    notification_error(
        StatusCode::NOT_FOUND,
        notif::ERR_SUBSCRIPTION_ID,
        " Invalid subscription Id.",
    )
}

async fn list_destinations(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = sim.application_bearer(&headers) {
        return *r;
    }
    let (limit, offset) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let all = sim.destinations();
    list_page(&headers, "destination", "destinations", &all, limit, offset)
}

async fn create_destination(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = sim.application_bearer(&headers) {
        return *r;
    }
    let Ok(req) = serde_json::from_slice::<DestinationRequest>(&body) else {
        return invalid_json();
    };
    let (status, endpoint, token) = match Simulator::check_destination(&req) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let taken = |state: &NotificationState| {
        state
            .destinations
            .iter()
            .any(|d| notif::same_endpoint(&d.endpoint, &endpoint))
    };
    if taken(&sim.notification_state()) {
        return destination_exists();
    }
    if let Err(r) = sim.challenge(&endpoint, &token).await {
        return *r;
    }
    let id = {
        let mut state = sim.notification_state();
        if taken(&state) {
            return destination_exists();
        }
        let id = sim.new_notification_id(&mut state);
        state.destinations.push(SimDestination {
            id: id.clone(),
            name: req.name,
            status,
            endpoint,
            verification_token: token,
        });
        id
    };
    created(&headers, format!("{NOTIFICATION}/destination/{id}"))
}

async fn get_destination(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = sim.application_bearer(&headers) {
        return *r;
    }
    let found = sim
        .notification_state()
        .destinations
        .iter()
        .find(|d| d.id == id)
        .map(SimDestination::wire);
    match found {
        Some(d) => (StatusCode::OK, axum::Json(d)).into_response(),
        None => no_destination(),
    }
}

async fn update_destination(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = sim.application_bearer(&headers) {
        return *r;
    }
    let Ok(req) = serde_json::from_slice::<DestinationRequest>(&body) else {
        return invalid_json();
    };
    let (status, endpoint, token) = match Simulator::check_destination(&req) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    {
        let state = sim.notification_state();
        if !state.destinations.iter().any(|d| d.id == id) {
            return no_destination();
        }
        if state
            .destinations
            .iter()
            .any(|d| d.id != id && notif::same_endpoint(&d.endpoint, &endpoint))
        {
            return destination_exists();
        }
    }
    if let Err(r) = sim.challenge(&endpoint, &token).await {
        return *r;
    }
    let old = {
        let mut state = sim.notification_state();
        let Some(d) = state.destinations.iter_mut().find(|d| d.id == id) else {
            return no_destination();
        };
        let old = std::mem::replace(&mut d.endpoint, endpoint.clone());
        d.status = status;
        d.verification_token = token;
        if req.name.is_some() {
            d.name = req.name;
        }
        old
    };
    sim.sync_deliveries(&[old, endpoint]);
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_destination(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = sim.application_bearer(&headers) {
        return *r;
    }
    let endpoint = {
        let mut state = sim.notification_state();
        let Some(i) = state.destinations.iter().position(|d| d.id == id) else {
            return no_destination();
        };
        if state.subscriptions.iter().any(|s| s.destination_id == id) {
            return notification_error(
                StatusCode::CONFLICT,
                notif::ERR_DESTINATION_IN_USE,
                "Destination is in use and cannot be deleted.",
            );
        }
        state.destinations.remove(i).endpoint
    };
    sim.sync_deliveries(&[endpoint]);
    StatusCode::NO_CONTENT.into_response()
}

async fn list_subscriptions(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let owner = match sim.subscription_bearer(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let (limit, offset) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let mine: Vec<NotificationSubscription> = sim
        .notification_state()
        .subscriptions
        .iter()
        .filter(|s| s.owner == owner)
        .map(SimSubscription::wire)
        .collect();
    list_page(
        &headers,
        "subscription",
        "subscriptions",
        &mine,
        limit,
        offset,
    )
}

async fn create_subscription(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let owner = match sim.subscription_bearer(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Ok(req) = serde_json::from_slice::<CreateSubscriptionRequest>(&body) else {
        return invalid_json();
    };
    let topic = req.topic_id.clone().unwrap_or_default();
    let scope = if sim.options.user_topics.contains(&topic) {
        TokenKind::User
    } else if sim.options.application_topics.contains(&topic) {
        TokenKind::Application
    } else {
        return notification_error(
            StatusCode::BAD_REQUEST,
            notif::ERR_TOPIC_ID,
            "Invalid or missing topic id.",
        );
    };
    if scope != owner {
        return notification_error(
            StatusCode::FORBIDDEN,
            notif::ERR_NOT_AUTHORIZED_FOR_TOPIC,
            "Not authorized for this topic.",
        );
    }
    let status = req.status.clone().unwrap_or_default();
    if status != "ENABLED" && status != "DISABLED" {
        return notification_error(
            StatusCode::BAD_REQUEST,
            notif::ERR_SUBSCRIPTION_STATUS,
            "Invalid or missing subscription status.",
        );
    }
    let payload = req.payload.clone().unwrap_or_default();
    if payload.schema_version.as_deref() != Some("1.0") {
        return notification_error(
            StatusCode::BAD_REQUEST,
            notif::ERR_SCHEMA_VERSION,
            "Invalid or missing schema version. Please refer to /topic/{topic_id} for supported \
             schema versions.",
        );
    }
    if payload.format.as_deref() != Some("JSON") {
        return notification_error(
            StatusCode::BAD_REQUEST,
            notif::ERR_FORMAT,
            "Specified format is not supported for the topic.",
        );
    }
    if payload.delivery_protocol.as_deref() != Some("HTTPS") {
        return notification_error(
            StatusCode::BAD_REQUEST,
            notif::ERR_PROTOCOL,
            "Invalid or missing protocol",
        );
    }
    let destination_id = req.destination_id.clone().unwrap_or_default();
    let (id, endpoint) = {
        let mut state = sim.notification_state();
        let Some(destination) = state
            .destinations
            .iter()
            .find(|d| d.id == destination_id)
            .cloned()
        else {
            return notification_error(
                StatusCode::BAD_REQUEST,
                notif::ERR_SUBSCRIPTION_DESTINATION,
                "Invalid or missing destination id.",
            );
        };
        if state
            .subscriptions
            .iter()
            .any(|s| s.topic == topic && s.owner == owner)
        {
            return notification_error(
                StatusCode::CONFLICT,
                notif::ERR_SUBSCRIPTION_EXISTS,
                "Subscription already exists",
            );
        }
        if status == notif::ENABLED && destination.status != notif::ENABLED {
            return notification_error(
                StatusCode::CONFLICT,
                notif::ERR_DESTINATION_NOT_ENABLED,
                "The subscription cannot be enabled since the destination is not enabled.",
            );
        }
        let id = sim.new_notification_id(&mut state);
        state.subscriptions.push(SimSubscription {
            id: id.clone(),
            topic,
            status,
            destination_id,
            owner,
            payload,
            creation_date: now_rfc3339(),
        });
        (id, destination.endpoint)
    };
    sim.sync_deliveries(&[endpoint]);
    created(&headers, format!("{NOTIFICATION}/subscription/{id}"))
}

async fn get_subscription(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let owner = match sim.subscription_bearer(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let found = sim
        .notification_state()
        .subscriptions
        .iter()
        .find(|s| s.id == id && s.owner == owner)
        .map(SimSubscription::wire);
    match found {
        Some(s) => (StatusCode::OK, axum::Json(s)).into_response(),
        None => no_subscription(),
    }
}

async fn delete_subscription(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let owner = match sim.subscription_bearer(&headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let endpoint = {
        let mut state = sim.notification_state();
        let Some(i) = state
            .subscriptions
            .iter()
            .position(|s| s.id == id && s.owner == owner)
        else {
            return no_subscription();
        };
        let removed = state.subscriptions.remove(i);
        state
            .destinations
            .iter()
            .find(|d| d.id == removed.destination_id)
            .map(|d| d.endpoint.clone())
    };
    sim.sync_deliveries(&endpoint.into_iter().collect::<Vec<_>>());
    StatusCode::NO_CONTENT.into_response()
}

/// Enables or disables a subscription.
fn set_subscription_status(
    sim: &Simulator,
    headers: &HeaderMap,
    id: &str,
    enable: bool,
) -> Response {
    let owner = match sim.subscription_bearer(headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let endpoint = {
        let mut state = sim.notification_state();
        let Some(i) = state
            .subscriptions
            .iter()
            .position(|s| s.id == id && s.owner == owner)
        else {
            return no_subscription();
        };
        let destination = state
            .destinations
            .iter()
            .find(|d| d.id == state.subscriptions[i].destination_id)
            .cloned();
        if enable
            && destination
                .as_ref()
                .is_none_or(|d| d.status != notif::ENABLED)
        {
            return notification_error(
                StatusCode::CONFLICT,
                notif::ERR_DESTINATION_NOT_ENABLED,
                "The subscription cannot be enabled since the destination is not enabled.",
            );
        }
        state.subscriptions[i].status = if enable { "ENABLED" } else { "DISABLED" }.to_string();
        destination.map(|d| d.endpoint)
    };
    sim.sync_deliveries(&endpoint.into_iter().collect::<Vec<_>>());
    StatusCode::NO_CONTENT.into_response()
}

async fn enable_subscription(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_subscription_status(&sim, &headers, &id, true)
}

async fn disable_subscription(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_subscription_status(&sim, &headers, &id, false)
}
