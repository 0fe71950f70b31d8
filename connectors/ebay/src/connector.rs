//! The eBay adapter: [`EbayConnector`] implements [`Connector`] against the Sell Inventory
//! API (stock, titles, offers, writes) and the Sell Feed API (offer prices for full reads).
//!
//! How each operation maps onto eBay:
//!
//! | operation | calls |
//! |---|---|
//! | `read_page` (first) | `POST /sell/feed/v1/inventory_task` (`LMS_ACTIVE_INVENTORY_REPORT`), `GET …/inventory_task/{id}` until done, `GET …/task/{id}/download_result_file`, then `GET /sell/inventory/v1/inventory_item?limit=&offset=0` |
//! | `read_page` (next) | `GET /sell/inventory/v1/inventory_item?limit=&offset=N` (`offset` is the page number); the report stays cached, and is downloaded again by task id if it is not |
//! | `read_skus` | `POST /sell/inventory/v1/bulk_get_inventory_item` (≤ 25 SKUs) and `GET /sell/inventory/v1/offer?sku=` per SKU (eBay has no multi-SKU offer read) |
//! | `push` | `POST /sell/inventory/v1/bulk_update_price_quantity` (≤ 25 SKUs per call; a price and a quantity of one SKU share its request); `GET /offer?sku=` first for SKUs whose offer id is not known yet |
//!
//! Prices live on offers, and eBay's only multi-listing read of offer prices is the active
//! inventory report; it carries SKU, price, quantity and listing id but not the offer id,
//! which writes need. Offer ids therefore come from `read_skus`, from the correction's refs,
//! or from a `GET /offer` look-up at push time, and are cached for the connector's life.
//!
//! eBay has no idempotency keys and no compare-and-set on these calls: writes are absolute,
//! `Correction::idempotency_key` and `Change::Stock::expected` are not sent.
//!
//! Every call takes its bearer token from a [`TokenSource`] ([`crate::oauth`]): the static
//! `access_token`, or a user token minted from `refresh_token` and refreshed before it
//! expires; a 401 to a minted token mints a new one and the call is sent once more.
//! [`Connector::ensure_webhook_subscriptions`] creates the connector's Notification API
//! destination and subscriptions ([`crate::notification`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use omnisync_sdk::connector::{Capabilities, Change, Connector, Correction, Page, PushOutcome};
use omnisync_sdk::http::{HttpClient, decode_json, status_error};
use omnisync_sdk::ratelimit::RateLimiter;
use omnisync_sdk::secret::ExposeSecret;
use omnisync_sdk::{ConnectorError, Currency, ErrorKind, Money, Offer, Record, StockLevel};
use reqwest::header::{ACCEPT, CONTENT_LANGUAGE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::KIND;
use crate::api::{
    self, ACTIVE_INVENTORY_REPORT, Amount, BulkGetInventoryItem, BulkGetInventoryItemResponse,
    BulkPriceQuantity, BulkPriceQuantityResponse, CreateInventoryTaskRequest, ErrorDetail,
    InventoryFilterCriteria, InventoryItem, InventoryItemsPage, InventoryTask, MARKETPLACE_HEADER,
    OfferDetails, OfferPriceQuantity, OffersPage, PriceQuantity, PriceQuantityResponse,
    ShipToLocationAvailability, SkuRef,
};
use crate::notification::Manager;
use crate::oauth::{APPLICATION_SCOPE, Grant, OAuthClient, TokenSource};
use crate::report;
use crate::settings::{Settings, SubscriptionToken};
use crate::webhook::{EbayWebhooks, WebhookConfig};

/// The `Record::refs` key of the offer id (`bulk_update_price_quantity` needs it).
pub const REF_OFFER_ID: &str = "offer_id";
/// The `Record::refs` key of the eBay listing (item) id, for reports.
pub const REF_LISTING_ID: &str = "listing_id";

const OP_ITEMS: &str = "GET /sell/inventory/v1/inventory_item";
const OP_BULK_GET: &str = "POST /sell/inventory/v1/bulk_get_inventory_item";
const OP_OFFERS: &str = "GET /sell/inventory/v1/offer";
const OP_BULK_UPDATE: &str = "POST /sell/inventory/v1/bulk_update_price_quantity";
const OP_CREATE_TASK: &str = "POST /sell/feed/v1/inventory_task";

/// The largest page `GET /inventory_item` accepts (current documentation).
const MAX_PAGE_SIZE: u32 = 200;
/// The most requests one `bulk_update_price_quantity` / `bulk_get_inventory_item` takes.
const API_BATCH_LIMIT: usize = 25;

/// Builds a connector from settings: checks them, resolves the secrets and builds the HTTP
/// clients. No network I/O (tokens are minted at the first call).
pub fn connect(settings: Settings) -> Result<EbayConnector, ConnectorError> {
    let op = "configuring the eBay connector";
    let base = settings.base_url.trim().trim_end_matches('/').to_string();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(ConnectorError::config(
            op,
            format!("settings.base_url {base:?} must start with https:// or http://"),
        ));
    }
    let timeout = Duration::from_secs(settings.request_timeout_secs.max(1));
    let (auth, app_auth) = credentials(&settings, &base, timeout)?;
    if settings.page_size == 0 || settings.page_size > MAX_PAGE_SIZE {
        return Err(ConnectorError::config(
            op,
            format!(
                "settings.page_size {} must be between 1 and {MAX_PAGE_SIZE}",
                settings.page_size
            ),
        ));
    }
    for (name, value) in [
        ("max_batch", settings.max_batch),
        ("max_read_batch", settings.max_read_batch),
    ] {
        if value == 0 || value > API_BATCH_LIMIT {
            return Err(ConnectorError::config(
                op,
                format!("settings.{name} {value} must be between 1 and {API_BATCH_LIMIT}"),
            ));
        }
    }
    if settings.webhook_schema_version.trim().is_empty() {
        return Err(ConnectorError::config(
            op,
            "settings.webhook_schema_version must not be empty",
        ));
    }
    for (name, value) in [
        ("marketplace_id", &settings.marketplace_id),
        ("content_language", &settings.content_language),
    ] {
        if value.is_empty() || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(ConnectorError::config(
                op,
                format!("settings.{name} {value:?} is not a valid header value"),
            ));
        }
    }
    // getPublicKey wants an application token; without one the user token is sent.
    let key_token = app_auth.clone().unwrap_or_else(|| auth.clone());
    let webhooks = webhooks(&settings, &base, key_token)?;
    let limiter = RateLimiter::new(settings.requests_per_second, settings.burst);
    let http = HttpClient::new(timeout, Some(limiter))?;
    Ok(EbayConnector {
        settings,
        base,
        auth,
        app_auth,
        http,
        report: tokio::sync::Mutex::new(ReportState::default()),
        offer_ids: Mutex::new(HashMap::new()),
        webhooks,
    })
}

/// The user token source and, when the settings give one, the application token source.
type TokenSources = (Arc<TokenSource>, Option<Arc<TokenSource>>);

/// The token sources the settings describe: the user token (static `access_token`, or
/// minted from `refresh_token`) and, when there is one, the application token (static
/// `webhook_application_token`, or minted with the client credentials grant).
fn credentials(
    settings: &Settings,
    base: &str,
    timeout: Duration,
) -> Result<TokenSources, ConnectorError> {
    let op = "configuring the eBay connector";
    let bad = |msg: String| ConnectorError::config(op, msg);
    let margin = Duration::from_secs(settings.token_refresh_margin_secs);
    let client_id = settings.client_id.as_deref().map(str::trim);
    let client = match (client_id, &settings.client_secret) {
        (None, None) => None,
        (Some(""), _) => return Err(bad("settings.client_id is empty".to_string())),
        (Some(id), Some(secret)) => {
            let secret = secret
                .resolve()
                .map_err(|e| bad(format!("settings.client_secret: {e}")))?;
            // The token endpoint is outside the API's call quota: no request budget.
            let http = HttpClient::new(timeout, None)?;
            Some(Arc::new(OAuthClient::new(
                http,
                base,
                id.to_string(),
                secret,
            )))
        }
        _ => {
            return Err(bad(
                "settings.client_id and settings.client_secret go together: set both for the \
                 connector to mint tokens, or neither"
                    .to_string(),
            ));
        }
    };
    let user = match (&settings.access_token, &settings.refresh_token) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "set either settings.access_token (a static user token) or \
                 settings.refresh_token (with settings.client_id and settings.client_secret), \
                 not both"
                    .to_string(),
            ));
        }
        (None, None) => {
            return Err(bad(
                "no eBay credentials: set settings.access_token (a static user token), or \
                 settings.client_id + settings.client_secret + settings.refresh_token (user \
                 tokens minted and refreshed by the connector)"
                    .to_string(),
            ));
        }
        (Some(token), None) => TokenSource::fixed(
            token
                .resolve()
                .map_err(|e| bad(format!("settings.access_token: {e}")))?,
        ),
        (None, Some(refresh)) => {
            let Some(client) = &client else {
                return Err(bad(
                    "settings.refresh_token needs settings.client_id and settings.client_secret \
                     (the application keyset the refresh token was issued to)"
                        .to_string(),
                ));
            };
            let mut scopes = Vec::new();
            for scope in &settings.oauth_scopes {
                let scope = scope.trim();
                if scope.is_empty() || scope.chars().any(char::is_whitespace) {
                    return Err(bad(format!(
                        "settings.oauth_scopes: {scope:?} is not one scope (one URL per entry)"
                    )));
                }
                if !scopes.iter().any(|s| s == scope) {
                    scopes.push(scope.to_string());
                }
            }
            let refresh_token = refresh
                .resolve()
                .map_err(|e| bad(format!("settings.refresh_token: {e}")))?;
            TokenSource::minted(
                client.clone(),
                Grant::RefreshToken {
                    refresh_token,
                    scopes,
                },
                margin,
            )
        }
    };
    let app = match (&settings.webhook_application_token, &client) {
        (Some(token), _) => {
            Some(TokenSource::fixed(token.resolve().map_err(|e| {
                bad(format!("settings.webhook_application_token: {e}"))
            })?))
        }
        (None, Some(client)) => Some(TokenSource::minted(
            client.clone(),
            Grant::ClientCredentials {
                scopes: vec![APPLICATION_SCOPE.to_string()],
            },
            margin,
        )),
        (None, None) => None,
    };
    Ok((Arc::new(user), app.map(Arc::new)))
}

/// The webhook handler, when [`Settings::webhook_endpoint`] and
/// [`Settings::webhook_verification_token`] are set (both or neither); `key_token` is what
/// `getPublicKey` is called with.
fn webhooks(
    settings: &Settings,
    base: &str,
    key_token: Arc<TokenSource>,
) -> Result<Option<EbayWebhooks>, ConnectorError> {
    let op = "configuring the eBay connector";
    let bad = |msg: String| ConnectorError::config(op, msg);
    let (endpoint, verification) = match (
        &settings.webhook_endpoint,
        &settings.webhook_verification_token,
    ) {
        (None, None) => return Ok(None),
        (Some(e), Some(t)) => (e.trim().to_string(), t),
        _ => {
            return Err(bad(
                "settings.webhook_endpoint and settings.webhook_verification_token go together: \
                 set both to take eBay notifications, or neither"
                    .to_string(),
            ));
        }
    };
    let url_ok = reqwest::Url::parse(&endpoint)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !url_ok {
        return Err(bad(format!(
            "settings.webhook_endpoint {endpoint:?} must be the absolute http(s) URL registered with eBay"
        )));
    }
    let verification_token = verification
        .resolve()
        .map_err(|e| bad(format!("settings.webhook_verification_token: {e}")))?;
    let t = verification_token.expose_secret();
    if !(32..=80).contains(&t.len())
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(
            "settings.webhook_verification_token must be 32 to 80 letters, digits, '_' or '-' \
             (eBay's rule for a destination's verification token)"
                .to_string(),
        ));
    }
    let order_topics: Vec<String> = settings
        .webhook_order_topics
        .iter()
        .map(|t| t.trim().to_string())
        .collect();
    if order_topics.iter().any(String::is_empty) {
        return Err(bad(
            "settings.webhook_order_topics must not hold an empty topic".to_string(),
        ));
    }
    if settings.webhook_public_key_cache_secs == 0 {
        return Err(bad(
            "settings.webhook_public_key_cache_secs must be at least 1".to_string(),
        ));
    }
    EbayWebhooks::new(WebhookConfig {
        base_url: base.to_string(),
        application_token: key_token,
        verification_token,
        endpoint,
        order_topics,
        key_ttl: Duration::from_secs(settings.webhook_public_key_cache_secs),
        request_timeout: Duration::from_secs(settings.request_timeout_secs.max(1)),
    })
    .map(Some)
    .map_err(bad)
}

/// The eBay connector (see the module documentation for the calls it makes).
pub struct EbayConnector {
    settings: Settings,
    base: String,
    /// The user token of every Sell API call.
    auth: Arc<TokenSource>,
    /// The application token (Notification API destinations), when the settings give one.
    app_auth: Option<Arc<TokenSource>>,
    http: HttpClient,
    report: tokio::sync::Mutex<ReportState>,
    /// SKU → offer id, learnt from `read_skus` and push-time look-ups.
    offer_ids: Mutex<HashMap<String, String>>,
    /// Notification handling, when configured.
    webhooks: Option<EbayWebhooks>,
}

impl std::fmt::Debug for EbayConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbayConnector")
            .field("base_url", &self.base)
            .field("marketplace_id", &self.settings.marketplace_id)
            .field("currency", &self.settings.currency)
            .field("auth", &self.auth)
            .field("app_auth", &self.app_auth)
            .finish_non_exhaustive()
    }
}

/// The report of the running full read, and a task created but not yet consumed.
#[derive(Default)]
struct ReportState {
    current: Option<Arc<PriceReport>>,
    pending: Option<(String, Instant)>,
}

/// Offer prices by SKU from one active inventory report.
#[derive(Debug)]
struct PriceReport {
    task_id: String,
    entries: HashMap<String, ReportEntry>,
}

#[derive(Debug)]
struct ReportEntry {
    offer: Option<Offer>,
    listing_id: Option<String>,
}

/// Why waiting for a report task ended without a report.
enum TaskError {
    /// The task failed or took too long: forget it.
    Dead(ConnectorError),
    /// A call failed: the task may still be good.
    Call(ConnectorError),
}

/// What `GET /offer?sku=` told about a SKU's offer on our marketplace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferInfo {
    offer_id: String,
    listing_id: Option<String>,
    offer: Option<Offer>,
}

/// The corrections of one SKU in a push.
#[derive(Debug, Default)]
struct Group {
    sku: String,
    price: Option<Money>,
    quantity: Option<i64>,
    price_idx: Vec<usize>,
    stock_idx: Vec<usize>,
    ref_offer_id: Option<String>,
    offer_id: Option<String>,
}

impl Group {
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.price_idx.iter().chain(self.stock_idx.iter()).copied()
    }
}

impl EbayConnector {
    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_accepting(method, path, "application/json")
    }

    /// A request without its bearer token: [`EbayConnector::send`] adds it.
    fn request_accepting(&self, method: Method, path: &str, accept: &str) -> RequestBuilder {
        self.http
            .raw()
            .request(method, format!("{}{path}", self.base))
            .header(MARKETPLACE_HEADER, self.settings.marketplace_id.as_str())
            .header(ACCEPT, accept)
    }

    fn throttle_wait(&self) -> Duration {
        Duration::from_secs(self.settings.throttle_retry_after_secs)
    }

    /// Adds what the SDK's status mapping cannot know: the wait for a 429 without
    /// `Retry-After`.
    fn refine(&self, mut e: ConnectorError) -> ConnectorError {
        if e.kind == ErrorKind::Throttled && e.retry_after.is_none() {
            e.retry_after = Some(self.throttle_wait());
        }
        e
    }

    /// Tokens minted so far for the Sell API calls (user token) and the Notification API
    /// (application token).
    pub fn tokens_minted(&self) -> (u64, u64) {
        (
            self.auth.mints(),
            self.app_auth.as_ref().map_or(0, |a| a.mints()),
        )
    }

    /// Sends a request with the user token (one retry with a new token after a 401 to a
    /// minted one) and returns a successful answer; any other status is an error.
    async fn send(
        &self,
        op: &str,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnectorError> {
        let (status, headers, bytes) = self.auth.send(&self.http, op, request).await?;
        if status.is_success() {
            return Ok((status, headers, bytes));
        }
        Err(self.refine(status_error(op, status, &headers, &bytes)))
    }

    /// Sends a bulk call and reads its answer: a success, or a 4xx that still lists
    /// per-item results (`has_items`), which is an answer too.
    async fn send_bulk<T: DeserializeOwned>(
        &self,
        op: &str,
        request: RequestBuilder,
        has_items: fn(&T) -> bool,
    ) -> Result<T, ConnectorError> {
        let (status, headers, bytes) = self.auth.send(&self.http, op, request).await?;
        if status.is_success() {
            return decode_json(op, &bytes);
        }
        match serde_json::from_slice::<T>(&bytes) {
            Ok(answer) if status.is_client_error() && has_items(&answer) => Ok(answer),
            _ => Err(self.refine(status_error(op, status, &headers, &bytes))),
        }
    }

    fn cached_offer_id(&self, sku: &str) -> Option<String> {
        self.offer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sku)
            .cloned()
    }

    fn remember_offer_id(&self, sku: &str, offer_id: &str) {
        self.offer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sku.to_string(), offer_id.to_string());
    }

    fn forget_offer_id(&self, sku: &str) {
        self.offer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sku);
    }

    // ---- reads -------------------------------------------------------------------------

    async fn inventory_page(&self, page: u64) -> Result<InventoryItemsPage, ConnectorError> {
        let request = self
            .request(Method::GET, &format!("{}/inventory_item", api::INVENTORY))
            .query(&[
                ("limit", self.settings.page_size.to_string()),
                ("offset", page.to_string()),
            ]);
        let (_, _, body) = self.send(OP_ITEMS, request).await?;
        decode_json(OP_ITEMS, &body)
    }

    /// `GET /offer?sku=`: the SKU's offer on our marketplace, `None` when it has none.
    async fn lookup_offer(&self, sku: &str) -> Result<Option<OfferInfo>, ConnectorError> {
        let request = self
            .request(Method::GET, &format!("{}/offer", api::INVENTORY))
            .query(&[
                ("sku", sku),
                ("marketplace_id", self.settings.marketplace_id.as_str()),
            ]);
        let body = match self.send(OP_OFFERS, request).await {
            Ok((_, _, body)) => body,
            // eBay answers 404 (errorId 25713 "This Offer is not available") or 400
            // (25702 "SKU … is not available") for a SKU without offers.
            Err(e) if e.status == Some(404) => return Ok(None),
            Err(e)
                if e.status == Some(400)
                    && e.message.contains(&api::ERR_SKU_NOT_AVAILABLE.to_string()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let page: OffersPage = decode_json(OP_OFFERS, &body)?;
        let info = pick_offer(
            &page,
            sku,
            &self.settings.marketplace_id,
            self.settings.currency,
        );
        if let Some(i) = &info {
            self.remember_offer_id(sku, &i.offer_id);
        }
        Ok(info)
    }

    /// Looks up the offers of many SKUs, a few at a time.
    async fn lookup_offers(
        &self,
        skus: Vec<String>,
    ) -> Result<HashMap<String, Option<OfferInfo>>, ConnectorError> {
        let results: Vec<(String, Result<Option<OfferInfo>, ConnectorError>)> = stream::iter(skus)
            .map(|sku| async move {
                let r = self.lookup_offer(&sku).await;
                (sku, r)
            })
            .buffer_unordered(self.settings.lookup_concurrency.max(1))
            .collect()
            .await;
        let mut out = HashMap::with_capacity(results.len());
        for (sku, r) in results {
            out.insert(sku, r?);
        }
        Ok(out)
    }

    async fn bulk_get(&self, skus: &[&String]) -> Result<Vec<Record>, ConnectorError> {
        let body = BulkGetInventoryItem {
            requests: skus.iter().map(|s| SkuRef { sku: (*s).clone() }).collect(),
        };
        let request = self
            .request(
                Method::POST,
                &format!("{}/bulk_get_inventory_item", api::INVENTORY),
            )
            .json(&body);
        // A 4xx that still lists per-SKU results (every SKU unknown) is an answer.
        let answer: BulkGetInventoryItemResponse = self
            .send_bulk(OP_BULK_GET, request, |a: &BulkGetInventoryItemResponse| {
                !a.responses.is_empty()
            })
            .await?;
        let mut records = Vec::with_capacity(answer.responses.len());
        for r in answer.responses {
            let item_status = r.status_code.unwrap_or(0);
            let sku = r.sku.clone().unwrap_or_default();
            if item_status >= 500 {
                return Err(ConnectorError::transient(
                    OP_BULK_GET,
                    format!(
                        "SKU {sku}: HTTP {item_status}: {}",
                        describe_errors(&r.errors)
                    ),
                )
                .with_status(item_status));
            }
            match (item_status, r.inventory_item) {
                (200..=299, Some(item)) => match record_from_item(&item, r.sku.as_deref()) {
                    Ok(record) => records.push(record),
                    Err(why) => tracing::warn!(
                        connector = KIND,
                        sku = %sku,
                        reason = %why,
                        "skipping an eBay inventory item that cannot be read"
                    ),
                },
                _ => tracing::debug!(
                    connector = KIND,
                    sku = %sku,
                    status = item_status,
                    errors = %describe_errors(&r.errors),
                    "eBay does not carry this SKU"
                ),
            }
        }
        Ok(records)
    }

    // ---- the active inventory report -----------------------------------------------------

    async fn create_report_task(&self) -> Result<String, ConnectorError> {
        let listing_format = self.settings.report_listing_format.trim();
        let body = CreateInventoryTaskRequest {
            feed_type: Some(ACTIVE_INVENTORY_REPORT.to_string()),
            schema_version: Some("1.0".to_string()),
            filter_criteria: (!listing_format.is_empty()).then(|| InventoryFilterCriteria {
                listing_format: Some(listing_format.to_string()),
            }),
        };
        let request = self
            .request(Method::POST, &format!("{}/inventory_task", api::FEED))
            .json(&body);
        let (status, headers, _) = match self.send(OP_CREATE_TASK, request).await {
            Ok(answer) => answer,
            // 409: 160024 "maximum number of feed tasks queued or processed concurrently",
            // 160025 "maximum number of records or tasks … in the period": wait, then retry.
            Err(e) if e.status == Some(409) => {
                let mut t = ConnectorError::throttled(
                    OP_CREATE_TASK,
                    e.message,
                    Some(self.throttle_wait()),
                );
                t.status = Some(409);
                return Err(t);
            }
            Err(e) => return Err(e),
        };
        api::id_from_location(
            OP_CREATE_TASK,
            &headers,
            &format!("the task (HTTP {status})"),
        )
    }

    async fn task_status(&self, task_id: &str) -> Result<InventoryTask, ConnectorError> {
        let path = format!(
            "{}/inventory_task/{}",
            api::FEED,
            urlencoding::encode(task_id)
        );
        let op = format!("GET {path}");
        let (_, _, body) = self.send(&op, self.request(Method::GET, &path)).await?;
        decode_json(&op, &body)
    }

    async fn download_report(&self, task_id: &str) -> Result<Arc<PriceReport>, ConnectorError> {
        let path = format!(
            "{}/task/{}/download_result_file",
            api::FEED,
            urlencoding::encode(task_id)
        );
        let op = format!("GET {path}");
        let request =
            self.request_accepting(Method::GET, &path, "*/*")
                .timeout(Duration::from_secs(
                    self.settings.report_download_timeout_secs.max(1),
                ));
        let (_, _, file) = self.send(&op, request).await?;
        let parse_op = op.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            report::unpack(&file).and_then(|xml| report::parse(&xml))
        })
        .await
        .map_err(|e| ConnectorError::protocol(&parse_op, format!("report parser failed: {e}")))?
        .map_err(|e| ConnectorError::protocol(&parse_op, e.to_string()))?;
        Ok(Arc::new(price_report(
            task_id,
            parsed,
            self.settings.currency,
        )))
    }

    /// A fresh report for a new full read: creates the task (or picks up the one a failed
    /// attempt left running), waits for it, downloads it.
    async fn fresh_report(&self) -> Result<Arc<PriceReport>, ConnectorError> {
        let mut state = self.report.lock().await;
        let timeout = Duration::from_secs(self.settings.report_timeout_secs);
        let (task_id, created) = match state.pending.take() {
            Some((id, at)) if at.elapsed() < timeout => (id, at),
            _ => (self.create_report_task().await?, Instant::now()),
        };
        state.pending = Some((task_id.clone(), created));
        match self.await_report(&task_id, created, timeout).await {
            Ok(report) => {
                state.pending = None;
                state.current = Some(report.clone());
                Ok(report)
            }
            Err(TaskError::Dead(e)) => {
                state.pending = None;
                Err(e)
            }
            // A call failed: a retry picks the same task up again, unless retrying is
            // pointless anyway.
            Err(TaskError::Call(e)) => {
                if !e.is_retryable() {
                    state.pending = None;
                }
                Err(e)
            }
        }
    }

    async fn await_report(
        &self,
        task_id: &str,
        created: Instant,
        timeout: Duration,
    ) -> Result<Arc<PriceReport>, TaskError> {
        let op = format!("GET {}/inventory_task/{task_id}", api::FEED);
        let poll = Duration::from_millis(self.settings.report_poll_interval_ms.max(1));
        loop {
            let task = self.task_status(task_id).await.map_err(TaskError::Call)?;
            match task.status.as_str() {
                "COMPLETED" | "COMPLETED_WITH_ERROR" | "PARTIALLY_PROCESSED" => break,
                "FAILED" => {
                    return Err(TaskError::Dead(ConnectorError::transient(
                        op,
                        "the active inventory report task FAILED; a retry creates a new one",
                    )));
                }
                status => {
                    if created.elapsed() >= timeout {
                        return Err(TaskError::Dead(ConnectorError::transient(
                            op,
                            format!(
                                "the active inventory report is still {status} after {}s; a \
                                 retry creates a new one",
                                timeout.as_secs()
                            ),
                        )));
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        }
        self.download_report(task_id).await.map_err(TaskError::Call)
    }

    /// The report of a full read under way: cached, or downloaded again by task id.
    async fn report_for(&self, task_id: &str) -> Result<Arc<PriceReport>, ConnectorError> {
        let mut state = self.report.lock().await;
        if let Some(current) = &state.current
            && current.task_id == task_id
        {
            return Ok(current.clone());
        }
        let report = self.download_report(task_id).await?;
        state.current = Some(report.clone());
        Ok(report)
    }

    async fn release_report(&self, task_id: &str) {
        let mut state = self.report.lock().await;
        if state.current.as_ref().is_some_and(|c| c.task_id == task_id) {
            state.current = None;
        }
    }

    // ---- writes ----------------------------------------------------------------------------

    /// Sends one `bulk_update_price_quantity` call and gives each group its outcome.
    async fn update_chunk(
        &self,
        groups: &[&Group],
    ) -> Result<Vec<(usize, PushOutcome)>, ConnectorError> {
        let body = BulkPriceQuantity {
            requests: groups.iter().map(|g| self.price_quantity(g)).collect(),
        };
        let request = self
            .request(
                Method::POST,
                &format!("{}/bulk_update_price_quantity", api::INVENTORY),
            )
            .header(CONTENT_LANGUAGE, self.settings.content_language.as_str())
            .json(&body);
        let answer: BulkPriceQuantityResponse = self
            .send_bulk(OP_BULK_UPDATE, request, |a: &BulkPriceQuantityResponse| {
                !a.responses.is_empty()
            })
            .await?;
        let mut out = Vec::new();
        for g in groups {
            let outcome = group_outcome(g, &answer.responses);
            if let PushOutcome::Rejected { reason, .. } = &outcome
                && reason.contains(&format!("errorId {}", api::ERR_OFFER_NOT_AVAILABLE))
            {
                self.forget_offer_id(&g.sku);
            }
            for i in g.indices() {
                out.push((i, outcome.clone()));
            }
        }
        Ok(out)
    }

    fn price_quantity(&self, g: &Group) -> PriceQuantity {
        let offer_quantity = if self.settings.stock_updates_offer_quantity {
            g.quantity
        } else {
            None
        };
        let offers = match &g.offer_id {
            Some(id) if g.price.is_some() || offer_quantity.is_some() => {
                vec![OfferPriceQuantity {
                    offer_id: id.clone(),
                    available_quantity: offer_quantity,
                    price: g.price.map(amount),
                }]
            }
            _ => Vec::new(),
        };
        PriceQuantity {
            sku: Some(g.sku.clone()),
            ship_to_location_availability: g
                .quantity
                .map(|q| ShipToLocationAvailability { quantity: Some(q) }),
            offers,
        }
    }
}

#[async_trait]
impl Connector for EbayConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn webhooks(&self) -> Option<&dyn omnisync_sdk::webhook::WebhookHandler> {
        self.webhooks
            .as_ref()
            .map(|w| w as &dyn omnisync_sdk::webhook::WebhookHandler)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: true,
            writes_stock: true,
            creates_listings: false,
            sale_price: false,
            stock_per_location: false,
            compare_and_set: false,
            max_batch: self.settings.max_batch,
            max_read_batch: self.settings.max_read_batch,
            stock_lane: false,
        }
    }

    async fn ensure_webhook_subscriptions(&self) -> Result<Vec<String>, ConnectorError> {
        let op = "ensuring eBay notification subscriptions";
        let Some(webhooks) = &self.webhooks else {
            return Err(ConnectorError::config(
                op,
                "set settings.webhook_endpoint and settings.webhook_verification_token first",
            ));
        };
        let Some(app) = &self.app_auth else {
            return Err(ConnectorError::config(
                op,
                "Notification API destinations take an application token: set \
                 settings.client_id and settings.client_secret (or \
                 settings.webhook_application_token)",
            ));
        };
        let (subs, subs_kind) = match self.settings.webhook_subscription_token {
            SubscriptionToken::User => (&self.auth, "user"),
            SubscriptionToken::Application => (app, "application"),
        };
        let done = Manager {
            http: &self.http,
            base: &self.base,
            app,
            subs,
            subs_kind,
            endpoint: webhooks.endpoint(),
            verification_token: webhooks.verification_token(),
            topics: webhooks.order_topics(),
            schema_version: self.settings.webhook_schema_version.trim(),
        }
        .ensure()
        .await?;
        for line in &done {
            tracing::info!(connector = KIND, "{line}");
        }
        Ok(done)
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let request = self
            .request(Method::GET, &format!("{}/inventory_item", api::INVENTORY))
            .query(&[("limit", "1"), ("offset", "0")]);
        let (_, _, body) = self.send(OP_ITEMS, request).await?;
        decode_json::<InventoryItemsPage>(OP_ITEMS, &body).map(drop)
    }

    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError> {
        let (task_id, page) = parse_cursor(cursor.as_deref())?;
        let report = if self.settings.read_prices_from_report {
            Some(match task_id {
                Some(id) if page > 0 => self.report_for(&id).await?,
                _ => self.fresh_report().await?,
            })
        } else {
            None
        };
        let answer = self.inventory_page(page).await?;
        let mut records = Vec::with_capacity(answer.inventory_items.len());
        for value in &answer.inventory_items {
            let mut record = match record_from_item(value, None) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(
                        connector = KIND,
                        page,
                        reason = %why,
                        "skipping an eBay inventory item that cannot be read"
                    );
                    continue;
                }
            };
            if let Some(report) = &report
                && let Some(entry) = report.entries.get(&record.external_id)
            {
                record.offer = entry.offer;
                if let Some(listing) = &entry.listing_id {
                    record
                        .refs
                        .insert(REF_LISTING_ID.to_string(), listing.clone());
                }
            }
            if let Some(offer_id) = self.cached_offer_id(&record.external_id) {
                record.refs.insert(REF_OFFER_ID.to_string(), offer_id);
            }
            records.push(record);
        }
        let more = answer.next.is_some() && !answer.inventory_items.is_empty();
        let task = report.as_ref().map(|r| r.task_id.as_str());
        let next = more.then(|| make_cursor(task, page + 1));
        if next.is_none()
            && let Some(task) = task
        {
            self.release_report(task).await;
        }
        Ok(Page { records, next })
    }

    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let mut seen = HashSet::new();
        let unique: Vec<&String> = skus
            .iter()
            .filter(|s| !s.is_empty() && seen.insert(s.as_str()))
            .collect();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(self.settings.max_read_batch.max(1)) {
            let mut records = self.bulk_get(chunk).await?;
            let offers = self
                .lookup_offers(records.iter().map(|r| r.external_id.clone()).collect())
                .await?;
            for record in &mut records {
                if let Some(Some(info)) = offers.get(&record.external_id) {
                    record.offer = info.offer;
                    record
                        .refs
                        .insert(REF_OFFER_ID.to_string(), info.offer_id.clone());
                    if let Some(listing) = &info.listing_id {
                        record
                            .refs
                            .insert(REF_LISTING_ID.to_string(), listing.clone());
                    }
                }
            }
            out.extend(records);
        }
        Ok(out)
    }

    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; batch.len()];
        let mut groups: Vec<Group> = Vec::new();
        let mut by_sku: HashMap<String, usize> = HashMap::new();

        for (i, c) in batch.iter().enumerate() {
            let sku = c
                .external_id
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.sku)
                .to_string();
            if sku.is_empty() {
                outcomes[i] = Some(rejected("the correction names no SKU", false));
                continue;
            }
            let gi = *by_sku.entry(sku.clone()).or_insert_with(|| {
                groups.push(Group {
                    sku,
                    ..Group::default()
                });
                groups.len() - 1
            });
            let group = &mut groups[gi];
            match &c.change {
                Change::Create { .. } => {
                    outcomes[i] = Some(rejected(
                        "the eBay connector does not create listings (an eBay listing needs an \
                         inventory item, an offer with category and business policies, and \
                         publishing): list it on eBay first",
                        false,
                    ));
                    continue;
                }
                Change::Offer { offer } => {
                    // eBay has no separate sale price: the effective price is the price.
                    let price = offer.effective();
                    if price.currency != self.settings.currency {
                        outcomes[i] = Some(rejected(
                            format!(
                                "price {price} is not in the marketplace currency {}",
                                self.settings.currency
                            ),
                            false,
                        ));
                        continue;
                    }
                    group.price = Some(price);
                    group.price_idx.push(i);
                }
                Change::Stock {
                    location, quantity, ..
                } => {
                    if location != StockLevel::DEFAULT_LOCATION {
                        outcomes[i] = Some(rejected(
                            format!(
                                "unknown location {location:?}: eBay holds one quantity per \
                                 listing, under {:?}",
                                StockLevel::DEFAULT_LOCATION
                            ),
                            false,
                        ));
                        continue;
                    }
                    group.quantity = Some(*quantity);
                    group.stock_idx.push(i);
                }
            }
            if group.ref_offer_id.is_none() {
                group.ref_offer_id = c.refs.get(REF_OFFER_ID).filter(|s| !s.is_empty()).cloned();
            }
        }

        // Offer ids: cached, else from the refs, else looked up.
        let wants_offer = |g: &Group| {
            g.price.is_some()
                || (g.quantity.is_some() && self.settings.stock_updates_offer_quantity)
        };
        let mut to_look_up = Vec::new();
        for g in groups.iter_mut().filter(|g| wants_offer(g)) {
            g.offer_id = self
                .cached_offer_id(&g.sku)
                .or_else(|| g.ref_offer_id.clone());
            if g.offer_id.is_none() {
                to_look_up.push(g.sku.clone());
            }
        }
        if !to_look_up.is_empty() {
            let found = self.lookup_offers(to_look_up).await?;
            for g in &mut groups {
                if let Some(answer) = found.get(&g.sku) {
                    g.offer_id = answer.as_ref().map(|i| i.offer_id.clone());
                }
            }
        }
        for g in &mut groups {
            if g.price.is_some() && g.offer_id.is_none() {
                let reason = format!(
                    "SKU {} has no offer on {} (GET /offer found none): nothing to price",
                    g.sku, self.settings.marketplace_id
                );
                for &i in &g.price_idx {
                    outcomes[i] = Some(rejected(reason.clone(), false));
                }
                g.price = None;
                g.price_idx.clear();
            }
        }

        let sendable: Vec<&Group> = groups
            .iter()
            .filter(|g| g.price.is_some() || g.quantity.is_some())
            .collect();
        let mut sent_any = false;
        for chunk in sendable.chunks(self.settings.max_batch.max(1)) {
            match self.update_chunk(chunk).await {
                Ok(results) => {
                    sent_any = true;
                    for (i, outcome) in results {
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(e) if !sent_any => return Err(e),
                Err(e) => {
                    let retryable = e.is_retryable();
                    for g in chunk {
                        for i in g.indices() {
                            outcomes[i] = Some(rejected(e.to_string(), retryable));
                        }
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| rejected("no outcome recorded for this correction", true)))
            .collect())
    }
}

// ---- value mapping (pure functions, unit-tested below) --------------------------------------

fn rejected(reason: impl Into<String>, retryable: bool) -> PushOutcome {
    PushOutcome::Rejected {
        reason: reason.into(),
        retryable,
    }
}

fn describe_errors(errors: &[ErrorDetail]) -> String {
    if errors.is_empty() {
        return "(no error details)".to_string();
    }
    errors
        .iter()
        .map(ErrorDetail::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A price as eBay writes it.
fn amount(m: Money) -> Amount {
    Amount {
        value: m.major_string(),
        currency: m.currency.code().to_string(),
    }
}

/// An eBay amount as money in the marketplace currency.
fn money(value: &str, currency: Option<&str>, expected: Currency) -> Result<Money, String> {
    let code = currency
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("price {value:?} has no currency"))?;
    let currency: Currency = code
        .parse()
        .map_err(|_| format!("price {value:?} has an unknown currency {code:?}"))?;
    if currency != expected {
        return Err(format!(
            "price {value} {currency} is not in the marketplace currency {expected}"
        ));
    }
    Money::parse_major(value, currency).map_err(|e| e.to_string())
}

/// A record (without offer) from one inventory item of `getInventoryItems` or
/// `bulkGetInventoryItem`.
fn record_from_item(value: &serde_json::Value, sku_hint: Option<&str>) -> Result<Record, String> {
    let item =
        InventoryItem::deserialize(value).map_err(|e| format!("unreadable inventory item: {e}"))?;
    let sku = item
        .sku
        .as_deref()
        .or(sku_hint)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            let title = item
                .product
                .as_ref()
                .and_then(|p| p.title.as_deref())
                .unwrap_or("?");
            format!("inventory item without SKU (title {title:?})")
        })?
        .to_string();
    let product = item.product.unwrap_or_default();
    let gtin = product
        .ean
        .iter()
        .chain(&product.upc)
        .chain(&product.isbn)
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .map(str::to_string);
    // No ship-to-home availability means nothing is offered.
    let quantity = item
        .availability
        .and_then(|a| a.ship_to_location_availability)
        .and_then(|s| s.quantity)
        .unwrap_or(0);
    Ok(Record {
        external_id: sku.clone(),
        sku: Some(sku),
        gtin,
        title: product.title.filter(|t| !t.is_empty()),
        offer: None,
        stock: vec![StockLevel::new(StockLevel::DEFAULT_LOCATION, quantity)],
        refs: Default::default(),
    })
}

/// The offer of `sku` on `marketplace` from a `getOffers` answer: published before
/// unpublished, fixed price before auction.
fn pick_offer(
    page: &OffersPage,
    sku: &str,
    marketplace: &str,
    currency: Currency,
) -> Option<OfferInfo> {
    let mut best: Option<((bool, bool), OfferDetails)> = None;
    for value in &page.offers {
        let offer = match OfferDetails::deserialize(value) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(connector = KIND, sku, error = %e, "skipping an unreadable eBay offer");
                continue;
            }
        };
        if offer.offer_id.as_deref().is_none_or(str::is_empty) {
            continue;
        }
        if offer
            .marketplace_id
            .as_deref()
            .is_some_and(|m| m != marketplace)
        {
            continue;
        }
        let rank = (
            offer.status.as_deref() == Some("PUBLISHED"),
            offer.format.as_deref().is_none_or(|f| f == "FIXED_PRICE"),
        );
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, offer));
        }
    }
    let (_, offer) = best?;
    let price = offer
        .pricing_summary
        .as_ref()
        .and_then(|p| p.price.as_ref())
        .and_then(|a| match money(&a.value, Some(&a.currency), currency) {
            Ok(m) => Some(Offer::regular(m)),
            Err(why) => {
                tracing::warn!(connector = KIND, sku, reason = %why, "eBay offer price not used");
                None
            }
        });
    Some(OfferInfo {
        offer_id: offer.offer_id.unwrap_or_default(),
        listing_id: offer.listing.and_then(|l| l.listing_id),
        offer: price,
    })
}

fn price_report(task_id: &str, parsed: report::Report, currency: Currency) -> PriceReport {
    for why in &parsed.skipped {
        tracing::warn!(connector = KIND, task = task_id, reason = %why, "skipping an active inventory report entry");
    }
    let mut entries = HashMap::with_capacity(parsed.lines.len());
    for line in parsed.lines {
        if entries.contains_key(&line.sku) {
            continue;
        }
        let offer = match &line.price {
            None => None,
            Some(p) => match money(p, line.currency.as_deref(), currency) {
                Ok(m) => Some(Offer::regular(m)),
                Err(why) => {
                    tracing::warn!(connector = KIND, sku = %line.sku, reason = %why, "eBay report price not used");
                    None
                }
            },
        };
        entries.insert(
            line.sku,
            ReportEntry {
                offer,
                listing_id: line.item_id,
            },
        );
    }
    PriceReport {
        task_id: task_id.to_string(),
        entries,
    }
}

/// The outcome of a SKU's request from the per-item answers of `bulkUpdatePriceQuantity`.
fn group_outcome(g: &Group, responses: &[PriceQuantityResponse]) -> PushOutcome {
    let mine: Vec<&PriceQuantityResponse> = responses
        .iter()
        .filter(|r| match r.sku.as_deref() {
            Some(s) => s == g.sku,
            None => g.offer_id.is_some() && r.offer_id == g.offer_id,
        })
        .collect();
    if mine.is_empty() {
        return rejected(
            format!("eBay's answer has no entry for SKU {}", g.sku),
            true,
        );
    }
    for r in mine {
        let status = r
            .status_code
            .unwrap_or(if r.errors.is_empty() { 200 } else { 400 });
        if (200..300).contains(&status) && r.errors.is_empty() {
            continue;
        }
        let retryable = status >= 500
            || status == 429
            || r.errors
                .iter()
                .any(|e| matches!(e.error_id, api::ERR_SYSTEM | api::ERR_CONCURRENT_ACCESS));
        return rejected(
            format!(
                "eBay refused SKU {} (HTTP {status}): {}",
                g.sku,
                describe_errors(&r.errors)
            ),
            retryable,
        );
    }
    PushOutcome::Applied
}

/// `"{page}"` or `"{page}@{report task id}"`.
fn make_cursor(task: Option<&str>, page: u64) -> String {
    match task {
        Some(t) => format!("{page}@{t}"),
        None => page.to_string(),
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<(Option<String>, u64), ConnectorError> {
    let Some(c) = cursor else {
        return Ok((None, 0));
    };
    let (page, task) = match c.split_once('@') {
        Some((p, t)) if !t.is_empty() => (p, Some(t.to_string())),
        _ => (c, None),
    };
    let page = page.parse::<u64>().map_err(|_| {
        ConnectorError::config(
            "eBay read_page",
            format!("cursor {c:?} is not one this connector made"),
        )
    })?;
    Ok((task, page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_an_inventory_item() {
        let item = json!({
            "sku": "A-1", "locale": "de_DE",
            "product": {"title": "Mug", "ean": ["4006381333931"], "aspects": {"Colour": ["Red"]}},
            "availability": {"shipToLocationAvailability": {"quantity": 7}},
            "condition": "NEW"
        });
        let r = record_from_item(&item, None).unwrap();
        assert_eq!(r.external_id, "A-1");
        assert_eq!(r.sku.as_deref(), Some("A-1"));
        assert_eq!(r.gtin.as_deref(), Some("4006381333931"));
        assert_eq!(r.title.as_deref(), Some("Mug"));
        assert_eq!(r.stock, vec![StockLevel::new("default", 7)]);
        assert!(r.offer.is_none());

        let bare = record_from_item(&json!({"sku": "B"}), None).unwrap();
        assert_eq!(bare.stock[0].available, 0);
        assert!(record_from_item(&json!({"product": {"title": "x"}}), None).is_err());
        assert!(record_from_item(&json!({"sku": 5}), None).is_err());
        assert_eq!(
            record_from_item(&json!({}), Some("C")).unwrap().external_id,
            "C"
        );
    }

    #[test]
    fn money_is_exact_and_currency_checked() {
        assert_eq!(
            money("19.9", Some("EUR"), Currency::EUR).unwrap(),
            Money::new(1990, Currency::EUR)
        );
        assert_eq!(
            money("21.0", Some("EUR"), Currency::EUR).unwrap().minor,
            2100
        );
        assert!(money("19.99", Some("SEK"), Currency::EUR).is_err());
        assert!(money("19.99", None, Currency::EUR).is_err());
        assert!(money("19.999", Some("EUR"), Currency::EUR).is_err());
        assert!(money("abc", Some("EUR"), Currency::EUR).is_err());
        assert_eq!(
            amount(Money::new(1990, Currency::EUR)),
            Amount {
                value: "19.90".into(),
                currency: "EUR".into()
            }
        );
    }

    #[test]
    fn picks_the_published_fixed_price_offer_of_the_marketplace() {
        let page: OffersPage = serde_json::from_value(json!({"total": 3, "offers": [
            {"offerId": "1", "sku": "A", "marketplaceId": "EBAY_US", "format": "FIXED_PRICE",
             "status": "PUBLISHED", "pricingSummary": {"price": {"value": "9.00", "currency": "USD"}}},
            {"offerId": "2", "sku": "A", "marketplaceId": "EBAY_DE", "format": "AUCTION",
             "status": "PUBLISHED"},
            {"offerId": "3", "sku": "A", "marketplaceId": "EBAY_DE", "format": "FIXED_PRICE",
             "status": "PUBLISHED", "listing": {"listingId": "110"},
             "pricingSummary": {"price": {"value": "12.50", "currency": "EUR"}}},
            "garbage"
        ]}))
        .unwrap();
        let info = pick_offer(&page, "A", "EBAY_DE", Currency::EUR).unwrap();
        assert_eq!(info.offer_id, "3");
        assert_eq!(info.listing_id.as_deref(), Some("110"));
        assert_eq!(
            info.offer,
            Some(Offer::regular(Money::new(1250, Currency::EUR)))
        );
        let empty: OffersPage = serde_json::from_value(json!({"offers": []})).unwrap();
        assert!(pick_offer(&empty, "A", "EBAY_DE", Currency::EUR).is_none());
    }

    #[test]
    fn maps_per_item_answers() {
        let g = Group {
            sku: "A".into(),
            offer_id: Some("5".into()),
            ..Group::default()
        };
        let ok = PriceQuantityResponse {
            status_code: Some(200),
            sku: Some("A".into()),
            offer_id: Some("5".into()),
            ..Default::default()
        };
        assert_eq!(
            group_outcome(&g, std::slice::from_ref(&ok)),
            PushOutcome::Applied
        );
        let bad = PriceQuantityResponse {
            status_code: Some(400),
            errors: vec![ErrorDetail::new(
                api::ERR_INVALID_QUANTITY,
                "API_INVENTORY",
                "REQUEST",
                "Invalid quantity.",
            )],
            ..ok.clone()
        };
        match group_outcome(&g, &[bad]) {
            PushOutcome::Rejected { reason, retryable } => {
                assert!(!retryable);
                assert!(reason.contains("errorId 25004"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let system = PriceQuantityResponse {
            status_code: Some(500),
            errors: vec![ErrorDetail::new(
                api::ERR_SYSTEM,
                "API_INVENTORY",
                "APPLICATION",
                "A system error has occurred.",
            )],
            ..ok.clone()
        };
        assert!(matches!(
            group_outcome(&g, &[system]),
            PushOutcome::Rejected {
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            group_outcome(&g, &[]),
            PushOutcome::Rejected {
                retryable: true,
                ..
            }
        ));
        // An entry that names only the offer still counts.
        let by_offer = PriceQuantityResponse { sku: None, ..ok };
        assert_eq!(group_outcome(&g, &[by_offer]), PushOutcome::Applied);
    }

    #[test]
    fn report_prices_are_checked_per_line() {
        let parsed = report::Report {
            lines: vec![
                report::ReportLine {
                    sku: "A".into(),
                    item_id: Some("1".into()),
                    price: Some("19.9".into()),
                    currency: Some("EUR".into()),
                    quantity: Some(1),
                },
                report::ReportLine {
                    sku: "B".into(),
                    price: Some("1,5".into()),
                    currency: Some("EUR".into()),
                    ..Default::default()
                },
                report::ReportLine {
                    sku: "C".into(),
                    price: Some("3".into()),
                    currency: Some("GBP".into()),
                    ..Default::default()
                },
            ],
            skipped: vec![],
        };
        let r = price_report("t1", parsed, Currency::EUR);
        assert_eq!(
            r.entries["A"].offer,
            Some(Offer::regular(Money::new(1990, Currency::EUR)))
        );
        assert_eq!(r.entries["A"].listing_id.as_deref(), Some("1"));
        assert!(r.entries["B"].offer.is_none());
        assert!(r.entries["C"].offer.is_none());
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(parse_cursor(None).unwrap(), (None, 0));
        assert_eq!(
            parse_cursor(Some(&make_cursor(Some("task-40-1"), 3))).unwrap(),
            (Some("task-40-1".to_string()), 3)
        );
        assert_eq!(
            parse_cursor(Some(&make_cursor(None, 2))).unwrap(),
            (None, 2)
        );
        assert_eq!(
            parse_cursor(Some("x@y")).unwrap_err().kind,
            ErrorKind::Config
        );
    }

    #[test]
    fn connect_validates_settings_without_network() {
        let mut s = Settings::new("literal:t".parse().unwrap());
        assert!(connect(s.clone()).is_ok());
        s.page_size = 500;
        assert_eq!(connect(s.clone()).unwrap_err().kind, ErrorKind::Config);
        s.page_size = 100;
        s.max_batch = 26;
        assert_eq!(connect(s.clone()).unwrap_err().kind, ErrorKind::Config);
        s.max_batch = 25;
        s.base_url = "ftp://x".into();
        assert_eq!(connect(s.clone()).unwrap_err().kind, ErrorKind::Config);
        let missing = Settings::new("env:OMNISYNC_EBAY_TEST_SURELY_UNSET".parse().unwrap());
        let e = connect(missing).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.to_string().contains("OMNISYNC_EBAY_TEST_SURELY_UNSET"));
    }
}
