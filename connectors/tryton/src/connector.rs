//! The Tryton adapter: reads price and stock per location from `product.product`.
//!
//! Tryton is the source of truth, so this connector only reads:
//!
//! - a page is one `model.product.product.search_read` with domain `[["id", ">", last_id]]`,
//!   order `[["id", "ASC"]]` and context `{"company": C, "locations": [first location]}`
//!   (code, name, price, `quantity`, `forecast_quantity`), then one search per further
//!   location for exactly the ids of that page (`[["id", "in", ids]]`, quantities only), run
//!   concurrently. The cursor is the last product id;
//! - `read_skus` is the same with domain `[["code", "in", skus]]`;
//! - the healthcheck logs in (or reuses the open session), reads the configured locations
//!   (`model.stock.location.read`; an unknown id fails naming it) and checks the company
//!   currency. Reads verify the locations once per connector as well, so an unknown location
//!   never reads as zero stock.
//!
//! Inactive products are excluded by Tryton's default domain.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use omnisync_sdk::http::HttpClient;
use omnisync_sdk::ratelimit::RateLimiter;
use omnisync_sdk::{
    Capabilities, Connector, ConnectorError, Correction, Currency, ErrorKind, Page, PushOutcome,
    Record,
};
use serde_json::{Map, Value, json};

use crate::KIND;
use crate::mapping::{self, ItemError};
use crate::rpc::{RpcClient, RpcConfig};
use crate::settings::Settings;

const SEARCH_READ: &str = "model.product.product.search_read";
const LOCATION_READ: &str = "model.stock.location.read";
const LOCATION_SEARCH: &str = "model.stock.location.search_read";
const COMPANY_READ: &str = "model.company.company.read";
/// Location types whose stock makes sense to offer.
const STOCK_TYPES: [&str; 3] = ["storage", "warehouse", "view"];

/// The rows of one further location's answer, by product id.
type LocationRows = (i64, HashMap<i64, Map<String, Value>>);

/// A connected Tryton source. Build it with [`connect`].
#[derive(Debug)]
pub struct TrytonConnector {
    rpc: RpcClient,
    company: i64,
    locations: Vec<i64>,
    currency: Currency,
    price_field: String,
    fallback_price_field: Option<String>,
    page_size: usize,
    read_batch: usize,
    verify_company_currency: bool,
    /// Set once the configured locations were found in Tryton (fail closed until then).
    locations_verified: tokio::sync::OnceCell<()>,
}

/// Resolves the password, validates the settings and builds the HTTP client. No network I/O.
pub fn connect(settings: Settings) -> Result<TrytonConnector, ConnectorError> {
    const OP: &str = "tryton connect";
    let currency: Currency = settings
        .currency
        .parse()
        .map_err(|e| ConnectorError::config(OP, format!("setting currency: {e}")))?;
    let base = reqwest::Url::parse(&settings.base_url).map_err(|e| {
        ConnectorError::config(OP, format!("setting base_url {:?}: {e}", settings.base_url))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ConnectorError::config(
            OP,
            format!(
                "setting base_url {:?}: expected http or https",
                settings.base_url
            ),
        ));
    }
    if settings.database.is_empty() || settings.database.contains('/') {
        return Err(ConnectorError::config(
            OP,
            format!(
                "setting database {:?}: expected a database name",
                settings.database
            ),
        ));
    }
    if settings.login.is_empty() {
        return Err(ConnectorError::config(OP, "setting login is empty"));
    }
    if settings.price_field.is_empty() {
        return Err(ConnectorError::config(OP, "setting price_field is empty"));
    }
    if settings.page_size == 0 || settings.read_batch == 0 {
        return Err(ConnectorError::config(
            OP,
            "settings page_size and read_batch must be at least 1",
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = settings.locations.iter().find(|l| !seen.insert(**l)) {
        return Err(ConnectorError::config(
            OP,
            format!("setting locations lists location {dup} twice"),
        ));
    }
    let password = settings
        .password
        .resolve()
        .map_err(|e| ConnectorError::config(OP, format!("setting password: {e}")))?;
    let limiter = RateLimiter::new(settings.requests_per_second, settings.burst);
    let http = HttpClient::new(settings.request_timeout(), Some(limiter))?;
    let rpc = RpcClient::new(RpcConfig {
        http,
        endpoint: settings.endpoint(),
        database: settings.database.clone(),
        login: settings.login.clone(),
        password,
        language: settings.language.clone(),
        login_retry_after: Duration::from_secs(settings.login_retry_after_secs),
    });
    Ok(TrytonConnector {
        rpc,
        company: settings.company,
        locations: settings.locations,
        currency,
        price_field: settings.price_field,
        fallback_price_field: settings.fallback_price_field.filter(|f| !f.is_empty()),
        page_size: settings.page_size,
        read_batch: settings.read_batch,
        verify_company_currency: settings.verify_company_currency,
        locations_verified: tokio::sync::OnceCell::new(),
    })
}

impl TrytonConnector {
    /// The call context for `location` (or no location).
    fn context(&self, location: Option<i64>) -> Value {
        let mut ctx = Map::new();
        ctx.insert("company".into(), json!(self.company));
        if let Some(l) = location {
            ctx.insert("locations".into(), json!([l]));
        }
        Value::Object(ctx)
    }

    /// Reads the configured locations; fails naming any that Tryton does not have.
    async fn verify_locations(&self) -> Result<(), ConnectorError> {
        if self.locations.is_empty() {
            return Ok(());
        }
        let fields = json!(["name", "code", "type"]);
        let rows = match self
            .rpc
            .call(
                LOCATION_READ,
                json!([self.locations, fields, self.context(None)]),
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.kind == ErrorKind::Permanent => {
                // trytond refuses the whole read when an id is unknown; find which.
                return Err(self.name_missing_locations(e).await);
            }
            Err(e) => return Err(e),
        };
        let rows = rows_of(LOCATION_READ, rows)?;
        let missing = self.missing_locations(&rows);
        if !missing.is_empty() {
            return Err(unknown_locations(&missing, None));
        }
        for row in &rows {
            let kind = row.get("type").and_then(Value::as_str).unwrap_or_default();
            if !STOCK_TYPES.contains(&kind) {
                let id = row.get("id").and_then(Value::as_i64);
                tracing::warn!(
                    location = ?id,
                    location_type = kind,
                    "Configured Tryton location is not a storage, warehouse or view location."
                );
            }
        }
        Ok(())
    }

    /// The configured locations (as text) that `rows` (location rows with an `id`) lack.
    fn missing_locations(&self, rows: &[Map<String, Value>]) -> Vec<String> {
        let found: BTreeSet<i64> = rows
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_i64))
            .collect();
        self.locations
            .iter()
            .filter(|l| !found.contains(l))
            .map(i64::to_string)
            .collect()
    }

    async fn name_missing_locations(&self, original: ConnectorError) -> ConnectorError {
        let domain = json!([["id", "in", self.locations]]);
        let ctx = json!({"company": self.company, "active_test": false});
        let found = self
            .rpc
            .call(LOCATION_SEARCH, json!([domain, 0, null, null, ["id"], ctx]))
            .await
            .and_then(|rows| rows_of(LOCATION_SEARCH, rows));
        match found {
            Ok(rows) => {
                let missing = self.missing_locations(&rows);
                if missing.is_empty() {
                    original
                } else {
                    unknown_locations(&missing, Some(&original.message))
                }
            }
            Err(_) => original,
        }
    }

    async fn ensure_locations(&self) -> Result<(), ConnectorError> {
        self.locations_verified
            .get_or_try_init(|| self.verify_locations())
            .await
            .map(|_| ())
    }

    /// Reads the company (proving the credentials and the company id) and, when
    /// `verify_company_currency` is set, compares its currency with ours.
    async fn check_company(&self) -> Result<(), ConnectorError> {
        let rows = self
            .rpc
            .call(
                COMPANY_READ,
                json!([[self.company], ["currency.code"], self.context(None)]),
            )
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::Permanent {
                    ConnectorError::config(
                        COMPANY_READ,
                        format!("cannot read company {}: {}", self.company, e.message),
                    )
                } else {
                    e
                }
            })?;
        let rows = rows_of(COMPANY_READ, rows)?;
        let code = rows
            .first()
            .and_then(|r| r.get("currency."))
            .and_then(|c| c.get("code"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ConnectorError::protocol(COMPANY_READ, "answer without currency.code")
            })?;
        if self.verify_company_currency && code != self.currency.code() {
            return Err(ConnectorError::config(
                COMPANY_READ,
                format!(
                    "company {} keeps its prices in {code}, but the connector is configured for {} (setting currency)",
                    self.company, self.currency
                ),
            ));
        }
        Ok(())
    }

    /// Product fields of the first call of a page.
    fn product_fields(&self) -> Value {
        let mut fields = vec!["code", "name", self.price_field.as_str()];
        if let Some(f) = &self.fallback_price_field
            && f != &self.price_field
        {
            fields.push(f);
        }
        if !self.locations.is_empty() {
            fields.extend(["quantity", "forecast_quantity"]);
        }
        json!(fields)
    }

    /// Reads the products matching `domain` (at most `limit`) with their stock at every
    /// configured location. Returns the records and the last product id seen and the number
    /// of rows Tryton answered (before skipping unusable products).
    async fn read_products(
        &self,
        domain: Value,
        limit: Option<usize>,
    ) -> Result<(Vec<Record>, Option<i64>, usize), ConnectorError> {
        self.ensure_locations().await?;
        let first_location = self.locations.first().copied();
        let order = json!([["id", "ASC"]]);
        let rows = self
            .rpc
            .call(
                SEARCH_READ,
                json!([
                    domain,
                    0,
                    limit,
                    order,
                    self.product_fields(),
                    self.context(first_location)
                ]),
            )
            .await?;
        let rows = rows_of(SEARCH_READ, rows)?;
        let answered = rows.len();
        let mut products: Vec<(i64, Map<String, Value>)> = Vec::with_capacity(rows.len());
        for row in rows {
            match row.get("id").and_then(Value::as_i64) {
                Some(id) => products.push((id, row)),
                None => tracing::warn!(
                    row = %mapping_short(&row),
                    "Skipping Tryton product row without an id."
                ),
            }
        }
        let last_id = products.iter().map(|(id, _)| *id).max();
        let ids: Vec<i64> = products.iter().map(|(id, _)| *id).collect();

        // Quantities at the further locations, for exactly these products.
        let further = futures::future::try_join_all(self.locations.iter().skip(1).map(|&loc| {
            let ids = &ids;
            async move {
                if ids.is_empty() {
                    return Ok((loc, HashMap::new()));
                }
                let rows = self
                    .rpc
                    .call(
                        SEARCH_READ,
                        json!([
                            [["id", "in", ids]],
                            0,
                            null,
                            [["id", "ASC"]],
                            ["quantity", "forecast_quantity"],
                            self.context(Some(loc))
                        ]),
                    )
                    .await?;
                let by_id: HashMap<i64, Map<String, Value>> = rows_of(SEARCH_READ, rows)?
                    .into_iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_i64).map(|id| (id, r)))
                    .collect();
                Ok::<_, ConnectorError>((loc, by_id))
            }
        }))
        .await?;

        let mut records = Vec::with_capacity(products.len());
        for (id, row) in &products {
            match self.record(*id, row, &further) {
                Ok(record) => records.push(record),
                Err(reason) => tracing::warn!(
                    product_id = id,
                    reason = %reason,
                    "Skipping Tryton product."
                ),
            }
        }
        Ok((records, last_id, answered))
    }

    /// One record; an error means the product is skipped.
    fn record(
        &self,
        id: i64,
        row: &Map<String, Value>,
        further: &[LocationRows],
    ) -> Result<Record, ItemError> {
        let sku = mapping::sku(row)?;
        let offer = match mapping::offer(
            row,
            &self.price_field,
            self.fallback_price_field.as_deref(),
            self.currency,
        ) {
            Ok(offer) => offer,
            Err(reason) => {
                tracing::warn!(
                    product_id = id,
                    sku = %sku,
                    reason = %reason,
                    "Tryton product has an unusable price; reporting it without an offer."
                );
                None
            }
        };
        let mut stock = Vec::with_capacity(self.locations.len());
        if let Some(&first) = self.locations.first() {
            stock.push(self.level(id, first, row)?);
        }
        for (loc, by_id) in further {
            let row = by_id.get(&id).ok_or(ItemError::MissingAtLocation(*loc))?;
            stock.push(self.level(id, *loc, row)?);
        }
        let title = row.get("name").and_then(Value::as_str).map(str::to_string);
        Ok(Record {
            external_id: id.to_string(),
            sku: Some(sku),
            gtin: None,
            title,
            offer,
            stock,
            refs: Default::default(),
        })
    }

    fn level(
        &self,
        id: i64,
        location: i64,
        row: &Map<String, Value>,
    ) -> Result<omnisync_sdk::StockLevel, ItemError> {
        let get = |f: &str| row.get(f).unwrap_or(&Value::Null);
        let (q, q_frac) = mapping::quantity("quantity", location, get("quantity"))?;
        let (f, f_frac) =
            mapping::quantity("forecast_quantity", location, get("forecast_quantity"))?;
        if q_frac || f_frac {
            tracing::warn!(
                product_id = id,
                location,
                quantity = %get("quantity"),
                forecast_quantity = %get("forecast_quantity"),
                "Fractional Tryton quantity rounded toward zero."
            );
        }
        Ok(mapping::stock_level(location, q, f))
    }
}

fn mapping_short(row: &Map<String, Value>) -> String {
    let s = Value::Object(row.clone()).to_string();
    s.chars().take(120).collect()
}

fn unknown_locations(missing: &[String], tryton_said: Option<&str>) -> ConnectorError {
    let mut message = format!(
        "configured Tryton location(s) {} do not exist (setting locations)",
        missing.join(", ")
    );
    if let Some(said) = tryton_said {
        message.push_str(&format!("; Tryton said: {said}"));
    }
    ConnectorError::config(LOCATION_READ, message)
}

/// The rows of a `read`/`search_read` answer, or a protocol error naming the call.
fn rows_of(operation: &str, result: Value) -> Result<Vec<Map<String, Value>>, ConnectorError> {
    let Value::Array(items) = result else {
        return Err(ConnectorError::protocol(
            operation,
            format!("expected a list of records, got {}", type_name(&result)),
        ));
    };
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(row) => rows.push(row),
            other => {
                return Err(ConnectorError::protocol(
                    operation,
                    format!("expected records, got a list holding {}", type_name(&other)),
                ));
            }
        }
    }
    Ok(rows)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[async_trait]
impl Connector for TrytonConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: false,
            writes_stock: false,
            creates_listings: false,
            sale_price: false,
            stock_per_location: true,
            compare_and_set: false,
            // Read-only: push accepts nothing.
            max_batch: 0,
            max_read_batch: self.read_batch,
            stock_lane: false,
        }
    }

    /// Logs in (unless a session is open: a refused session logs in again, so the
    /// credentials are proven either way without piling up server-side sessions), reads the
    /// configured locations and the company, and checks the company currency.
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.verify_locations().await?;
        // Remember success so reads need not verify again.
        self.locations_verified.get_or_init(|| async {}).await;
        self.check_company().await
    }

    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError> {
        let after = match cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c.parse::<i64>().map_err(|_| {
                ConnectorError::config(
                    SEARCH_READ,
                    format!("invalid cursor {c:?}: expected a Tryton product id"),
                )
            })?,
        };
        let domain = json!([["id", ">", after]]);
        let (records, last_id, answered) = self.read_products(domain, Some(self.page_size)).await?;
        let next = match last_id {
            Some(last) if answered >= self.page_size => Some(last.to_string()),
            _ => None,
        };
        Ok(Page { records, next })
    }

    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let wanted: Vec<&String> = skus
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let mut records = Vec::new();
        for chunk in wanted.chunks(self.read_batch) {
            let domain = json!([["code", "in", chunk]]);
            let (found, _, _) = self.read_products(domain, None).await?;
            records.extend(found);
        }
        Ok(records)
    }

    async fn push(&self, _batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        Err(ConnectorError::config(
            "tryton push",
            "tryton connector is read-only: it is a source",
        ))
    }
}
