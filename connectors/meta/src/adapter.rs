//! The Meta catalog adapter: [`MetaConnector`] implements [`Connector`] over the Graph API.
//!
//! - Full reads page through `GET /{catalog_id}/products` with `limit` and the `after`
//!   cursor; [`Page::next`] is Graph's `paging.cursors.after` (only while `paging.next` says
//!   there is more). `read_skus` uses the edge's `filter={"retailer_id":{"is_any":[…]}}`.
//! - A record is one product item: `external_id` and `sku` are its `retailer_id` (the id
//!   `items_batch` addresses), `refs.product_id` is Meta's own id, the offer comes from the
//!   display `price`/`sale_price` (checked against `currency`), and the stock is
//!   `quantity_to_sell_on_facebook` under [`StockLevel::DEFAULT_LOCATION`].
//! - Pushes go to `POST /{catalog_id}/items_batch` (`item_type=PRODUCT_ITEM`), at most
//!   `batch_size` requests per call, then the adapter polls
//!   `GET /{catalog_id}/check_batch_request_status` until Meta is done — the one place it
//!   waits — and maps the sampled `errors` (by `line`, else by `id`) and
//!   `ids_of_invalid_requests` onto per-item outcomes.
//! - Every call carries the token as `Authorization: Bearer` (never in a URL), waits for the
//!   request budget, and maps failures through [`ErrorPolicy`].
//! - Every answer's `X-Business-Use-Case-Usage` is kept per use case ([`Pacer`]), and
//!   [`Connector::pacing`] tells the pusher how long to gather before its next call so the
//!   hourly `items_batch` budget is not used up (`pacing_from_percent`,
//!   `pacing_max_window_ms`); crossing into pacing is logged once at `warn`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use omnisync_sdk::http::{HttpClient, decode_json};
use omnisync_sdk::ratelimit::RateLimiter;
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::{
    Capabilities, Change, Connector, ConnectorError, Correction, Money, Offer, Page, PushOutcome,
    Record, StockLevel,
};
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::graph::{
    BatchStatus, BatchStatusAnswer, BucReading, Crossing, EdgePage, ErrorPolicy, GraphErrorBody,
    ItemsBatchAnswer, Pacer, PacingPolicy, ProductItem, id_string, parse_buc,
};
use crate::price::{format_price, parse_price};
use crate::settings::Settings;
use crate::webhook::MetaWebhooks;

/// Fields asked of the products edge.
pub const PRODUCT_FIELDS: &str = "id,retailer_id,name,price,sale_price,sale_price_start_date,\
sale_price_end_date,currency,availability,quantity_to_sell_on_facebook";

const OP_PRODUCTS: &str = "GET /{catalog_id}/products";
const OP_ITEMS_BATCH: &str = "POST /{catalog_id}/items_batch";
const OP_BATCH_STATUS: &str = "GET /{catalog_id}/check_batch_request_status";
const OP_CATALOG: &str = "GET /{catalog_id}";

/// Availability written with a positive quantity.
pub const IN_STOCK: &str = "in stock";
/// Availability written with a zero quantity.
pub const OUT_OF_STOCK: &str = "out of stock";

/// The key of Meta's product id in [`Record::refs`].
pub const REF_PRODUCT_ID: &str = "product_id";

/// Business Use Case usage (percent) from which each response is logged at `warn`.
const BUC_WARN_PERCENT: f64 = 90.0;

/// A connector to one Meta commerce catalog.
pub struct MetaConnector {
    settings: Settings,
    http: HttpClient,
    token: SecretString,
    appsecret_proof: Option<String>,
    catalog_url: String,
    policy: ErrorPolicy,
    webhooks: Option<MetaWebhooks>,
    pacer: Pacer,
}

impl fmt::Debug for MetaConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaConnector")
            .field("catalog_url", &self.catalog_url)
            .field("currency", &self.settings.currency)
            .finish_non_exhaustive()
    }
}

/// Builds a connector: checks the settings, resolves the secrets and builds the HTTP
/// client. No network I/O.
pub fn connect(settings: Settings) -> Result<MetaConnector, ConnectorError> {
    settings
        .validate()
        .map_err(|m| ConnectorError::config("meta settings", m))?;
    let token = settings
        .access_token
        .resolve()
        .map_err(|e| ConnectorError::config("meta settings: access_token", e.to_string()))?;
    let verify_token = match &settings.webhook_verify_token {
        None => None,
        Some(reference) => Some(reference.resolve().map_err(|e| {
            ConnectorError::config("meta settings: webhook_verify_token", e.to_string())
        })?),
    };
    let (appsecret_proof, webhooks) = match &settings.app_secret {
        None => (None, None),
        Some(reference) => {
            let secret = reference
                .resolve()
                .map_err(|e| ConnectorError::config("meta settings: app_secret", e.to_string()))?;
            let proof = appsecret_proof(&token, &secret)?;
            let webhooks = MetaWebhooks::new(
                secret,
                verify_token,
                settings.webhook_product_field.clone(),
                settings.webhook_order_field.clone(),
            );
            (Some(proof), Some(webhooks))
        }
    };
    let limiter = RateLimiter::new(settings.requests_per_second, settings.burst);
    let http = HttpClient::new(
        Duration::from_secs(settings.request_timeout_secs),
        Some(limiter),
    )?;
    let catalog_url = format!(
        "{}/{}/{}",
        settings.base_url.trim_end_matches('/'),
        settings.graph_version,
        settings.catalog_id
    );
    let policy = ErrorPolicy {
        throttle_codes: settings.throttle_codes.clone(),
    };
    let pacer = Pacer::new(PacingPolicy {
        from_percent: f64::from(settings.pacing_from_percent),
        max_window: Duration::from_millis(settings.pacing_max_window_ms),
    });
    Ok(MetaConnector {
        settings,
        http,
        token,
        appsecret_proof,
        catalog_url,
        policy,
        webhooks,
        pacer,
    })
}

/// `appsecret_proof`: hex HMAC-SHA256 of the access token keyed by the app secret.
fn appsecret_proof(
    token: &SecretString,
    app_secret: &SecretString,
) -> Result<String, ConnectorError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose_secret().as_bytes())
        .map_err(|_| ConnectorError::config("meta settings: app_secret", "unusable key"))?;
    mac.update(token.expose_secret().as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

impl MetaConnector {
    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The latest Business Use Case usage seen on any answer, one reading per use case
    /// (ordered by use case); empty before the first answer that carried the header.
    pub fn usage(&self) -> Vec<BucReading> {
        self.pacer.readings()
    }

    /// [`Connector::pacing`] as of `now` (which is what `pacing` asks with
    /// [`Instant::now`]): the longest wait any use case's latest reading asks for, less the
    /// time since that reading was seen. Asked at a reading's [`BucReading::seen`] it gives
    /// the whole wait.
    pub fn pacing_at(&self, now: Instant) -> Option<Duration> {
        self.pacer.pacing_at(now)
    }

    /// Remembers the usage an answer reported, and logs it.
    fn note_usage(&self, operation: &str, headers: &HeaderMap) {
        let usage = parse_buc(headers);
        if usage.is_empty() {
            return;
        }
        for crossing in self.pacer.note(&usage, Instant::now()) {
            let from_percent = self.settings.pacing_from_percent;
            match crossing {
                Crossing::Started {
                    kind,
                    percent,
                    wait,
                } => tracing::warn!(
                    operation,
                    use_case = %kind,
                    percent,
                    from_percent,
                    wait_ms = wait.as_millis() as u64,
                    "Meta usage is past the pacing threshold: pushes are spaced out to keep \
                     within the budget."
                ),
                Crossing::Ended { kind, percent } => tracing::info!(
                    operation,
                    use_case = %kind,
                    percent,
                    from_percent,
                    "Meta usage is back under the pacing threshold: pushes are no longer \
                     spaced out."
                ),
            }
        }
        if let Some(top) = usage.iter().max_by(|a, b| a.usage().total_cmp(&b.usage())) {
            if top.usage() >= BUC_WARN_PERCENT {
                tracing::warn!(
                    operation,
                    use_case = %top.kind,
                    percent = top.usage(),
                    "Meta Business Use Case usage is close to its limit."
                );
            } else {
                tracing::debug!(operation, use_case = %top.kind, percent = top.usage(), "Meta usage.");
            }
        }
    }

    /// Sends one Graph call and decodes a success body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<T, ConnectorError> {
        let mut request = request.bearer_auth(self.token.expose_secret());
        if let Some(proof) = &self.appsecret_proof {
            request = request.query(&[("appsecret_proof", proof.as_str())]);
        }
        // Graph's error bodies and headers are read here, whatever the status.
        let (status, headers, body) = self.http.send_raw(operation, request).await?;
        self.note_usage(operation, &headers);
        if !status.is_success() {
            return Err(self
                .policy
                .error_from_response(operation, status, &headers, &body));
        }
        let value: Value = decode_json(operation, &body)?;
        if value.get("error").is_some_and(Value::is_object)
            && let Ok(GraphErrorBody { error }) =
                serde_json::from_value::<GraphErrorBody>(value.clone())
        {
            return Err(self.policy.graph_error(operation, status, &headers, &error));
        }
        serde_json::from_value(value).map_err(|e| {
            ConnectorError::protocol(
                operation,
                format!(
                    "unexpected answer shape ({e}): {}",
                    omnisync_sdk::http::quote(&body)
                ),
            )
        })
    }

    /// One page of the products edge.
    async fn products_page(
        &self,
        filter: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), ConnectorError> {
        let limit = limit.to_string();
        let mut query: Vec<(&str, &str)> = vec![("fields", PRODUCT_FIELDS), ("limit", &limit)];
        if let Some(filter) = filter {
            query.push(("filter", filter));
        }
        if let Some(after) = after {
            query.push(("after", after));
        }
        let request = self
            .http
            .raw()
            .get(format!("{}/products", self.catalog_url))
            .query(&query);
        let page: EdgePage = self.call(OP_PRODUCTS, request).await?;
        let records = page
            .data
            .iter()
            .filter_map(|node| self.record_of(node))
            .collect();
        let paging = page.paging.unwrap_or_default();
        let next = if paging.next.is_some() && !page.data.is_empty() {
            match paging
                .cursors
                .and_then(|c| c.after)
                .filter(|a| !a.is_empty())
            {
                Some(after) => Some(after),
                None => {
                    return Err(ConnectorError::protocol(
                        OP_PRODUCTS,
                        "paging.next without paging.cursors.after",
                    ));
                }
            }
        } else {
            None
        };
        Ok((records, next))
    }

    /// Maps one product node to a record; `None` (with a warning) when it cannot be bound.
    fn record_of(&self, node: &Value) -> Option<Record> {
        let product_id = node.get("id").and_then(id_string).unwrap_or_default();
        let item: ProductItem = match serde_json::from_value(node.clone()) {
            Ok(item) => item,
            Err(error) => {
                tracing::warn!(
                    product_id = %product_id,
                    %error,
                    "Skipping a Meta product that cannot be read."
                );
                return None;
            }
        };
        let Some(retailer_id) = item.retailer_id.clone().filter(|r| !r.trim().is_empty()) else {
            tracing::warn!(
                product_id = %product_id,
                "Skipping a Meta product without a retailer_id."
            );
            return None;
        };
        let offer = match self.offer_of(&item) {
            Ok(offer) => offer,
            Err(reason) => {
                tracing::warn!(
                    retailer_id = %retailer_id,
                    product_id = %product_id,
                    reason = %reason,
                    "Reporting a Meta product without an offer: its price cannot be read."
                );
                None
            }
        };
        let stock = match stock_of(&item) {
            Ok(stock) => stock,
            Err(reason) => {
                tracing::warn!(
                    retailer_id = %retailer_id,
                    product_id = %product_id,
                    reason = %reason,
                    "Reporting a Meta product without stock: its quantity cannot be read."
                );
                Vec::new()
            }
        };
        let mut refs = BTreeMap::new();
        if !product_id.is_empty() {
            refs.insert(REF_PRODUCT_ID.to_string(), product_id);
        }
        Some(Record {
            external_id: retailer_id.clone(),
            sku: Some(retailer_id),
            gtin: None,
            title: item.name.filter(|n| !n.is_empty()),
            offer,
            stock,
            refs,
        })
    }

    /// The offer of a product: `None` when it has no price.
    fn offer_of(&self, item: &ProductItem) -> Result<Option<Offer>, String> {
        let currency = self.settings.currency;
        let reported = item.currency.as_deref();
        let Some(price_text) = item.price.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        let price = parse_price(price_text, currency, reported).map_err(|e| e.to_string())?;
        let mut sale = match item.sale_price.as_deref().filter(|p| !p.trim().is_empty()) {
            None => None,
            Some(text) => {
                let sale = parse_price(text, currency, reported)
                    .map_err(|e| format!("sale_price: {e}"))?;
                // A zero sale price is how an unset one may read back; it is never a sale.
                (sale.minor > 0).then_some(sale)
            }
        };
        if sale.is_some()
            && !sale_is_live(
                item.sale_price_start_date.as_deref(),
                item.sale_price_end_date.as_deref(),
                OffsetDateTime::now_utc(),
            )
        {
            sale = None;
        }
        Ok(Some(Offer { price, sale }))
    }

    /// Builds the `items_batch` request for one correction, or the reason it is refused.
    fn request_for(&self, correction: &Correction) -> Result<(String, Value), String> {
        let retailer_id = match &correction.change {
            Change::Create { .. } => correction.sku.clone(),
            _ => correction
                .external_id
                .clone()
                .unwrap_or_else(|| correction.sku.clone()),
        };
        if retailer_id.trim().is_empty() {
            return Err("no retailer id (empty SKU and external id)".to_string());
        }
        let mut data = Map::new();
        let method = match &correction.change {
            Change::Offer { offer } => {
                self.put_offer(&mut data, offer)?;
                "UPDATE"
            }
            Change::Stock {
                location, quantity, ..
            } => {
                check_location(location)?;
                put_quantity(&mut data, *quantity);
                "UPDATE"
            }
            Change::Create {
                title,
                offer,
                stock,
            } => {
                for (key, value) in &self.settings.create_fields {
                    data.insert(
                        key.clone(),
                        Value::String(value.replace("{sku}", &retailer_id)),
                    );
                }
                if let Some(title) = title.as_deref().filter(|t| !t.trim().is_empty()) {
                    data.insert("title".into(), Value::String(title.to_string()));
                }
                self.put_offer(&mut data, offer)?;
                if offer.sale.is_none() {
                    // Nothing to end on a new item.
                    data.remove("sale_price");
                }
                for location in stock.keys() {
                    check_location(location)?;
                }
                match stock.get(StockLevel::DEFAULT_LOCATION) {
                    Some(quantity) => put_quantity(&mut data, *quantity),
                    None => {
                        data.insert("availability".into(), Value::String(OUT_OF_STOCK.into()));
                    }
                }
                self.settings.create_method.as_str()
            }
        };
        data.insert("id".into(), Value::String(retailer_id.clone()));
        Ok((
            retailer_id,
            json!({ "method": method, "data": Value::Object(data) }),
        ))
    }

    fn put_offer(&self, data: &mut Map<String, Value>, offer: &Offer) -> Result<(), String> {
        let price = self.check_money("price", offer.price)?;
        data.insert("price".into(), Value::String(format_price(price)));
        let sale = match offer.sale {
            Some(sale) => format_price(self.check_money("sale price", sale)?),
            None => self.settings.no_sale_price_value.clone(),
        };
        data.insert("sale_price".into(), Value::String(sale));
        Ok(())
    }

    fn check_money(&self, what: &str, money: Money) -> Result<Money, String> {
        if money.currency != self.settings.currency {
            return Err(format!(
                "{what} {money} is not in the catalog currency {}",
                self.settings.currency
            ));
        }
        if money.minor < 0 {
            return Err(format!("{what} {money} is negative"));
        }
        Ok(money)
    }

    /// Sends one `items_batch` call and waits for its outcome.
    async fn run_batch(
        &self,
        chunk: &[(usize, String, Value)],
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let requests: Vec<&Value> = chunk.iter().map(|(_, _, r)| r).collect();
        let body = json!({
            "item_type": "PRODUCT_ITEM",
            "allow_upsert": self.settings.allow_upsert,
            "requests": requests,
        });
        let request = self
            .http
            .raw()
            .post(format!("{}/items_batch", self.catalog_url))
            .json(&body);
        let answer: ItemsBatchAnswer = self.call(OP_ITEMS_BATCH, request).await?;

        let mut lines_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (line, (_, rid, _)) in chunk.iter().enumerate() {
            lines_of.entry(rid.as_str()).or_default().push(line);
        }
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; chunk.len()];
        for status in &answer.validation_status {
            let rid = status.retailer_id.as_deref().unwrap_or_default();
            for warning in &status.warnings {
                tracing::warn!(
                    retailer_id = %rid,
                    warning = %warning.message,
                    "Meta accepted an item with a warning."
                );
            }
            if status.errors.is_empty() {
                continue;
            }
            let reason = status
                .errors
                .iter()
                .map(|m| m.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            for &line in lines_of.get(rid).into_iter().flatten() {
                outcomes[line] = Some(rejected(format!("Meta refused the item: {reason}")));
            }
        }
        if answer.handles.is_empty() {
            if outcomes.iter().all(Option::is_none) {
                return Err(ConnectorError::transient(
                    OP_ITEMS_BATCH,
                    "Meta returned no batch handle and no validation errors: nothing was ingested",
                ));
            }
            for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                *outcome = Some(PushOutcome::Rejected {
                    reason: "Meta ingested nothing from this batch (no handle)".to_string(),
                    retryable: true,
                });
            }
        }
        for handle in &answer.handles {
            let status = self.wait_for(handle).await?;
            apply_status(&status, chunk, &lines_of, &mut outcomes);
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(PushOutcome::Applied))
            .collect())
    }

    /// Polls a batch handle until Meta is done with it, within `batch_poll_timeout_secs`.
    async fn wait_for(&self, handle: &str) -> Result<BatchStatus, ConnectorError> {
        let interval = Duration::from_millis(self.settings.batch_poll_interval_ms.max(1));
        let budget = Duration::from_secs(self.settings.batch_poll_timeout_secs);
        let deadline = tokio::time::Instant::now() + budget;
        let mut last = String::from("unknown");
        // Meta never finishes a batch at once: give it one interval before the first poll.
        if tokio::time::Instant::now() + interval <= deadline {
            tokio::time::sleep(interval).await;
        }
        loop {
            let request = self
                .http
                .raw()
                .get(format!("{}/check_batch_request_status", self.catalog_url))
                .query(&[
                    ("handle", handle),
                    ("load_ids_of_invalid_requests", "true"),
                    (
                        "fields",
                        "handle,status,errors,errors_total_count,warnings,warnings_total_count,ids_of_invalid_requests",
                    ),
                ]);
            let mut wait = interval;
            match self
                .call::<BatchStatusAnswer>(OP_BATCH_STATUS, request)
                .await
            {
                Ok(answer) => {
                    let status = answer.data.into_iter().next().ok_or_else(|| {
                        ConnectorError::protocol(OP_BATCH_STATUS, "empty data for the batch handle")
                    })?;
                    if status.is_final() {
                        return Ok(status);
                    }
                    last = status.status;
                }
                Err(e) if e.is_retryable() => {
                    // The batch is already submitted: keep waiting for it rather than fail.
                    wait = e.retry_after.unwrap_or(interval).max(interval);
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "Polling a Meta batch failed; polling again.");
                }
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ConnectorError::transient(
                    OP_BATCH_STATUS,
                    format!(
                        "batch still {last} after {} s; Meta may still apply it",
                        budget.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }
}

fn rejected(reason: String) -> PushOutcome {
    PushOutcome::Rejected {
        reason,
        retryable: false,
    }
}

/// Maps a final batch status onto the outcomes still open.
fn apply_status(
    status: &BatchStatus,
    chunk: &[(usize, String, Value)],
    lines_of: &HashMap<&str, Vec<usize>>,
    outcomes: &mut [Option<PushOutcome>],
) {
    for issue in &status.errors {
        let message = issue
            .message
            .clone()
            .unwrap_or_else(|| "no message".to_string());
        let reason = format!("Meta refused the item: {message}");
        let by_line = issue.line().filter(|&l| {
            l < chunk.len() && issue.retailer_id().is_none_or(|rid| rid == chunk[l].1)
        });
        match (by_line, issue.retailer_id()) {
            (Some(line), _) => outcomes[line] = Some(rejected(reason)),
            (None, Some(rid)) => {
                for &line in lines_of.get(rid.as_str()).into_iter().flatten() {
                    outcomes[line] = Some(rejected(reason.clone()));
                }
            }
            (None, None) => {
                tracing::warn!(error = %message, "Meta reported a batch error for no item.");
            }
        }
    }
    for rid in &status.ids_of_invalid_requests {
        for &line in lines_of.get(rid.as_str()).into_iter().flatten() {
            if outcomes[line].is_none() {
                outcomes[line] = Some(rejected(
                    "Meta refused the item (its error was not among the sampled errors)"
                        .to_string(),
                ));
            }
        }
    }
    let attributed = outcomes.iter().filter(|o| o.is_some()).count() as u64;
    if let Some(total) = status.errors_total_count
        && total > attributed
        && status.ids_of_invalid_requests.is_empty()
    {
        tracing::warn!(
            errors = total,
            attributed,
            "Meta reported more batch errors than it named; the read-back will tell."
        );
    }
    if let Some(total) = status.warnings_total_count.filter(|&t| t > 0) {
        tracing::warn!(warnings = total, "Meta reported warnings for a batch.");
    }
    for warning in status.warnings.iter().take(20) {
        tracing::warn!(
            retailer_id = %warning.retailer_id().unwrap_or_default(),
            warning = %warning.message.as_deref().unwrap_or_default(),
            "Meta applied an item with a warning."
        );
    }
    if !status.is_finished() {
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            *outcome = Some(PushOutcome::Rejected {
                reason: format!(
                    "the batch ended with status {:?}; Meta may not have applied this item",
                    status.status
                ),
                retryable: true,
            });
        }
    }
}

fn check_location(location: &str) -> Result<(), String> {
    if location == StockLevel::DEFAULT_LOCATION {
        Ok(())
    } else {
        Err(format!(
            "unknown location {location:?}: a Meta catalog holds one quantity per item, under {:?}",
            StockLevel::DEFAULT_LOCATION
        ))
    }
}

fn put_quantity(data: &mut Map<String, Value>, quantity: i64) {
    data.insert("quantity_to_sell_on_facebook".into(), json!(quantity));
    let availability = if quantity > 0 { IN_STOCK } else { OUT_OF_STOCK };
    data.insert("availability".into(), Value::String(availability.into()));
}

/// The stock of a product: its quantity, or zero when it has none but reads out of stock.
fn stock_of(item: &ProductItem) -> Result<Vec<StockLevel>, String> {
    let quantity = match &item.quantity_to_sell_on_facebook {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| format!("quantity_to_sell_on_facebook {n} is not an integer"))?,
        ),
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("quantity_to_sell_on_facebook {s:?} is not an integer"))?,
        ),
        Some(other) => {
            return Err(format!(
                "quantity_to_sell_on_facebook {other} is not an integer"
            ));
        }
    };
    Ok(match quantity {
        Some(q) => vec![StockLevel::new(StockLevel::DEFAULT_LOCATION, q)],
        None if item
            .availability
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(OUT_OF_STOCK)) =>
        {
            vec![StockLevel::new(StockLevel::DEFAULT_LOCATION, 0)]
        }
        None => Vec::new(),
    })
}

/// Whether a sale with this window is live at `now`. Unreadable or epoch-zero bounds count
/// as "no bound" (Meta reads unset dates back as 1970).
fn sale_is_live(start: Option<&str>, end: Option<&str>, now: OffsetDateTime) -> bool {
    let bound = |text: Option<&str>| {
        let text = text?.trim();
        if text.is_empty() {
            return None;
        }
        match parse_graph_time(text) {
            Some(t) if t.unix_timestamp() > 86_400 => Some(t),
            Some(_) => None,
            None => {
                tracing::warn!(value = %text, "Ignoring an unreadable Meta sale date.");
                None
            }
        }
    };
    let started = bound(start).is_none_or(|s| s <= now);
    let not_ended = bound(end).is_none_or(|e| now < e);
    started && not_ended
}

/// Graph timestamps: RFC 3339, or Graph's `2026-01-31T10:00:00+0000`.
fn parse_graph_time(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .ok()
        .or_else(|| {
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
            );
            OffsetDateTime::parse(text, &format).ok()
        })
}

#[async_trait]
impl Connector for MetaConnector {
    fn kind(&self) -> &'static str {
        crate::KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: true,
            writes_stock: true,
            creates_listings: true,
            sale_price: true,
            stock_per_location: false,
            compare_and_set: false,
            max_batch: self.settings.batch_size,
            max_read_batch: self.settings.read_batch,
            stock_lane: false,
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let request = self
            .http
            .raw()
            .get(&self.catalog_url)
            .query(&[("fields", "id,name")]);
        let node: Value = self.call(OP_CATALOG, request).await?;
        match node.get("id").and_then(id_string) {
            Some(id) if id == self.settings.catalog_id => Ok(()),
            Some(id) => Err(ConnectorError::config(
                OP_CATALOG,
                format!(
                    "asked for catalog {} but Meta answered for {id}",
                    self.settings.catalog_id
                ),
            )),
            None => Err(ConnectorError::protocol(OP_CATALOG, "answer without an id")),
        }
    }

    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError> {
        let (records, next) = self
            .products_page(None, self.settings.page_size, cursor.as_deref())
            .await?;
        Ok(Page { records, next })
    }

    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let wanted: Vec<&String> = {
            let mut seen = HashSet::new();
            skus.iter()
                .filter(|s| !s.is_empty() && seen.insert(s.as_str()))
                .collect()
        };
        let mut found: BTreeMap<String, Record> = BTreeMap::new();
        for chunk in wanted.chunks(self.settings.read_batch.max(1)) {
            let filter = json!({ "retailer_id": { "is_any": chunk } }).to_string();
            let wanted_here: HashSet<&str> = chunk.iter().map(|s| s.as_str()).collect();
            let mut after: Option<String> = None;
            // A filtered read normally fits one page; the bound only guards a looping cursor.
            for _ in 0..=chunk.len() {
                let (records, next) = self
                    .products_page(Some(&filter), chunk.len(), after.as_deref())
                    .await?;
                for record in records {
                    if wanted_here.contains(record.external_id.as_str()) {
                        found.insert(record.external_id.clone(), record);
                    }
                }
                match next {
                    Some(n) if after.as_deref() != Some(n.as_str()) => after = Some(n),
                    _ => break,
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; batch.len()];
        let mut prepared: Vec<(usize, String, Value)> = Vec::with_capacity(batch.len());
        for (index, correction) in batch.iter().enumerate() {
            match self.request_for(correction) {
                Ok((rid, request)) => prepared.push((index, rid, request)),
                Err(reason) => {
                    tracing::warn!(
                        sku = %correction.sku,
                        reason = %reason,
                        "Refusing a Meta correction before sending it."
                    );
                    outcomes[index] = Some(rejected(reason));
                }
            }
        }
        for (n, chunk) in prepared.chunks(self.settings.batch_size.max(1)).enumerate() {
            match self.run_batch(chunk).await {
                Ok(results) => {
                    for ((index, _, _), outcome) in chunk.iter().zip(results) {
                        outcomes[*index] = Some(outcome);
                    }
                }
                // Nothing was sent before this chunk: the whole call failed.
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    for (index, _, _) in chunk {
                        outcomes[*index] = Some(PushOutcome::Rejected {
                            reason: e.to_string(),
                            retryable: e.is_retryable(),
                        });
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(PushOutcome::Rejected {
                    reason: "not sent".to_string(),
                    retryable: true,
                })
            })
            .collect())
    }

    /// From the latest `X-Business-Use-Case-Usage` of each use case: `None` up to
    /// `pacing_from_percent`, then growing linearly to `pacing_max_window_ms` at 100 %, or
    /// the time to regain access when longer; counted from the answer that carried it, so an
    /// old reading paces no more once its wait has passed.
    fn pacing(&self) -> Option<Duration> {
        self.pacing_at(Instant::now())
    }

    fn webhooks(&self) -> Option<&dyn omnisync_sdk::webhook::WebhookHandler> {
        self.webhooks
            .as_ref()
            .map(|w| w as &dyn omnisync_sdk::webhook::WebhookHandler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnisync_sdk::Currency;
    use time::macros::datetime;

    fn connector() -> MetaConnector {
        let mut s = Settings::new("42", "literal:tok".parse().unwrap());
        s.base_url = "http://127.0.0.1:9".into();
        s.create_fields
            .insert("link".into(), "https://shop.example/p/{sku}".into());
        connect(s).unwrap()
    }

    fn correction(change: Change) -> Correction {
        Correction {
            idempotency_key: "k".into(),
            sku: "SKU-1".into(),
            external_id: Some("SKU-1".into()),
            refs: BTreeMap::new(),
            change,
        }
    }

    fn sek(minor: i64) -> Money {
        Money::new(minor, Currency::SEK)
    }

    #[test]
    fn maps_products_to_records() {
        let c = connector();
        let node = json!({
            "id": "9001", "retailer_id": "SKU-1", "name": "Mug",
            "price": "kr129.90", "sale_price": "kr99.00", "currency": "SEK",
            "availability": "in stock", "quantity_to_sell_on_facebook": 7
        });
        let r = c.record_of(&node).unwrap();
        assert_eq!(r.external_id, "SKU-1");
        assert_eq!(r.sku.as_deref(), Some("SKU-1"));
        assert_eq!(r.title.as_deref(), Some("Mug"));
        assert_eq!(
            r.offer,
            Some(Offer {
                price: sek(12990),
                sale: Some(sek(9900))
            })
        );
        assert_eq!(r.stock, vec![StockLevel::new("default", 7)]);
        assert_eq!(r.refs.get("product_id").map(String::as_str), Some("9001"));
    }

    #[test]
    fn bad_values_degrade_the_record_not_the_page() {
        let c = connector();
        // Wrong currency: kept, without an offer.
        let r = c
            .record_of(&json!({"id": "1", "retailer_id": "A", "price": "€5.00", "currency": "EUR"}))
            .unwrap();
        assert_eq!(r.offer, None);
        // No retailer id: skipped.
        assert!(c.record_of(&json!({"id": "2", "price": "kr5"})).is_none());
        // Unreadable node: skipped.
        assert!(c.record_of(&json!({"id": "3", "retailer_id": 5})).is_none());
        // No price: no offer; no quantity but out of stock: zero.
        let r = c
            .record_of(&json!({"id": "4", "retailer_id": "D", "availability": "out of stock"}))
            .unwrap();
        assert_eq!(r.offer, None);
        assert_eq!(r.stock, vec![StockLevel::new("default", 0)]);
        // Quantity as a string, negative clamped.
        let r = c
            .record_of(&json!({"retailer_id": "E", "quantity_to_sell_on_facebook": "-3"}))
            .unwrap();
        assert_eq!(r.stock, vec![StockLevel::new("default", 0)]);
        assert!(r.refs.is_empty());
    }

    #[test]
    fn sale_windows() {
        let now = datetime!(2026-06-15 12:00 UTC);
        assert!(sale_is_live(None, None, now));
        assert!(sale_is_live(Some("2026-06-01T00:00:00+0000"), None, now));
        assert!(!sale_is_live(Some("2026-07-01T00:00:00+0000"), None, now));
        assert!(!sale_is_live(None, Some("2026-06-10T00:00:00+00:00"), now));
        assert!(sale_is_live(
            Some("1970-01-01T00:00:00+0000"),
            Some("1970-01-01T00:00:00+0000"),
            now
        ));
        assert!(sale_is_live(Some("garbage"), None, now));
        let c = connector();
        let r = c
            .record_of(&json!({
                "retailer_id": "F", "price": "SEK10.00", "sale_price": "SEK8.00",
                "sale_price_start_date": "2999-01-01T00:00:00+0000"
            }))
            .unwrap();
        assert_eq!(r.offer, Some(Offer::regular(sek(1000))));
        let r = c
            .record_of(&json!({"retailer_id": "G", "price": "SEK10.00", "sale_price": "SEK0.00"}))
            .unwrap();
        assert_eq!(r.offer, Some(Offer::regular(sek(1000))));
    }

    #[test]
    fn builds_batch_requests() {
        let c = connector();
        let (rid, r) = c
            .request_for(&correction(Change::Offer {
                offer: Offer {
                    price: sek(12990),
                    sale: Some(sek(9990)),
                },
            }))
            .unwrap();
        assert_eq!(rid, "SKU-1");
        assert_eq!(
            r,
            json!({"method": "UPDATE", "data": {"id": "SKU-1", "price": "129.90 SEK", "sale_price": "99.90 SEK"}})
        );
        let (_, r) = c
            .request_for(&correction(Change::Offer {
                offer: Offer::regular(sek(100)),
            }))
            .unwrap();
        assert_eq!(r["data"]["sale_price"], json!(""));
        let (_, r) = c
            .request_for(&correction(Change::Stock {
                location: "default".into(),
                quantity: 0,
                expected: Some(3),
            }))
            .unwrap();
        assert_eq!(
            r,
            json!({"method": "UPDATE", "data": {"id": "SKU-1", "quantity_to_sell_on_facebook": 0, "availability": "out of stock"}})
        );
        let mut create = correction(Change::Create {
            title: Some("Mug".into()),
            offer: Offer::regular(sek(5000)),
            stock: BTreeMap::from([("default".to_string(), 4)]),
        });
        create.external_id = None;
        let (_, r) = c.request_for(&create).unwrap();
        assert_eq!(
            r,
            json!({"method": "CREATE", "data": {
                "id": "SKU-1", "title": "Mug", "price": "50.00 SEK", "condition": "new",
                "link": "https://shop.example/p/SKU-1",
                "quantity_to_sell_on_facebook": 4, "availability": "in stock"
            }})
        );
    }

    #[test]
    fn refuses_what_the_catalog_cannot_hold() {
        let c = connector();
        let e = c
            .request_for(&correction(Change::Offer {
                offer: Offer::regular(Money::new(100, Currency::NOK)),
            }))
            .unwrap_err();
        assert!(e.contains("not in the catalog currency SEK"), "{e}");
        let e = c
            .request_for(&correction(Change::Stock {
                location: "oslo".into(),
                quantity: 1,
                expected: None,
            }))
            .unwrap_err();
        assert!(e.contains("unknown location"), "{e}");
        let e = c
            .request_for(&correction(Change::Offer {
                offer: Offer::regular(sek(-1)),
            }))
            .unwrap_err();
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn maps_batch_status_to_outcomes() {
        let chunk: Vec<(usize, String, Value)> = ["A", "B", "C", "D", "A"]
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.to_string(), Value::Null))
            .collect();
        let mut lines_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (line, (_, rid, _)) in chunk.iter().enumerate() {
            lines_of.entry(rid.as_str()).or_default().push(line);
        }
        let status: BatchStatus = serde_json::from_value(json!({
            "status": "finished",
            "errors_total_count": 3,
            "errors": [{"line": 1, "id": "B", "message": "bad price"}],
            "ids_of_invalid_requests": ["B", "A"]
        }))
        .unwrap();
        let mut out = vec![None; chunk.len()];
        apply_status(&status, &chunk, &lines_of, &mut out);
        assert!(
            matches!(&out[1], Some(PushOutcome::Rejected { reason, retryable: false }) if reason.contains("bad price"))
        );
        assert!(matches!(&out[0], Some(PushOutcome::Rejected { .. })));
        assert!(matches!(&out[4], Some(PushOutcome::Rejected { .. })));
        assert!(out[2].is_none() && out[3].is_none());

        let status: BatchStatus = serde_json::from_value(json!({
            "status": "error",
            "errors": [{"id": "C", "message": "nope"}]
        }))
        .unwrap();
        let mut out = vec![None; chunk.len()];
        apply_status(&status, &chunk, &lines_of, &mut out);
        assert!(matches!(
            &out[2],
            Some(PushOutcome::Rejected {
                retryable: false,
                ..
            })
        ));
        assert!(matches!(
            &out[3],
            Some(PushOutcome::Rejected {
                retryable: true,
                ..
            })
        ));
    }

    #[test]
    fn appsecret_proof_is_hex_hmac() {
        let proof = appsecret_proof(
            &SecretString::from("token".to_string()),
            &SecretString::from("secret".to_string()),
        )
        .unwrap();
        assert_eq!(proof.len(), 64);
        assert!(proof.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn debug_output_has_no_token() {
        let c = connector();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok") && !shown.contains("literal"),
            "{shown}"
        );
    }
}
