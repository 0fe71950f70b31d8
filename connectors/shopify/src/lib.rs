//! # omnisync-shopify
//!
//! The omnisync connector for the Shopify Admin GraphQL API, a webshop target for prices
//! and stock per location, and its loopback simulator ([`sim`]).
//!
//! - **Records**: one per product variant. `external_id` is the variant gid; `refs` carry
//!   `product_id` and `inventory_item_id`; stock location codes are location gids
//!   (`gid://shopify/Location/N`); money is in the configured shop currency
//!   ([`Settings::currency`], checked against `shop { currencyCode }` by the healthcheck).
//!   A `compareAtPrice` above `price` reads as `Offer { price: compareAt, sale: price }`.
//! - **Full reads** run one bulk operation (JSONL, not counted against the cost bucket) and
//!   hand the result out in pages, or page `productVariants` under the single-query cost
//!   limit ([`FullReadMode`]). `read_skus` searches `sku:"A" OR sku:"B"`.
//! - **Writes**: stock with `inventorySetQuantities` (compare-and-set with
//!   `changeFromQuantity`, a deterministic `@idempotent` key), prices with aliased
//!   `productVariantsBulkUpdate` mutations grouped by product.
//! - **Throttling**: requests wait for the cost bucket Shopify reports; a `THROTTLED`
//!   answer (HTTP 200) or a 429 becomes [`omnisync_sdk::ErrorKind::Throttled`] with the
//!   wait as `retry_after`.
//! - **Webhooks**: with [`Settings::webhook_secret`] set, [`Connector::webhooks`] returns a
//!   [`webhook::ShopifyWebhooks`] that verifies `X-Shopify-Hmac-Sha256` and reads
//!   `inventory_levels/update`, `products/*`, `inventory_items/*` and `orders/create`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use omnisync_sdk::http::HttpClient;
use omnisync_sdk::ratelimit::RateLimiter;
use omnisync_sdk::{
    Capabilities, Connector, ConnectorError, Correction, Page, PushOutcome, Record,
};
use serde_json::{Value, json};

mod bulk;
mod graphql;
pub mod mapping;
mod push;
pub mod settings;
pub mod sim;
pub mod webhook;

pub use settings::{FullReadMode, Settings};

use crate::graphql::{Gql, short};
use crate::mapping::{
    LevelNode, PageInfo, VariantNode, max_first, page_cost, sku_search, variant_to_record,
};

/// The connector kind.
pub const KIND: &str = "shopify";

/// Cursor prefix of pages served from a bulk snapshot: `bulk:{offset}:{operation gid}`.
const BULK_CURSOR: &str = "bulk:";
/// Cursor prefix of paged reads: `page:{endCursor}`.
const PAGE_CURSOR: &str = "page:";
/// Most pages one `read_skus` chunk follows (search may match more than asked).
const MAX_SKU_PAGES: usize = 20;

/// The paged variant query (used by paged full reads and `read_skus`).
fn variants_query() -> String {
    format!(
        "query ReadVariants($first: Int!, $after: String, $query: String, $levels: Int!) {{ \
         productVariants(first: $first, after: $after, query: $query) {{ \
         pageInfo {{ hasNextPage endCursor }} \
         nodes {{ {} inventoryItem {{ id tracked inventoryLevels(first: $levels) {{ \
         pageInfo {{ hasNextPage }} \
         nodes {{ location {{ id }} quantities(names: [\"available\"]) {{ name quantity }} }} }} }} }} }} }}",
        mapping::VARIANT_FIELDS
    )
}

const SHOP_QUERY: &str = "query Shop { shop { name currencyCode } }";

/// A bulk result held while its pages are handed out.
#[derive(Debug)]
struct Snapshot {
    operation: String,
    records: Arc<Vec<Record>>,
}

/// A connected Shopify shop.
#[derive(Debug)]
pub struct ShopifyConnector {
    settings: Settings,
    gql: Gql,
    /// The API client without the request budget: bulk results come from a storage host.
    download: HttpClient,
    snapshot: Mutex<Option<Snapshot>>,
    webhooks: Option<webhook::ShopifyWebhooks>,
}

/// Resolves the access token (and the webhook secret, when set) and builds the HTTP
/// client. No network I/O.
pub fn connect(settings: Settings) -> Result<ShopifyConnector, ConnectorError> {
    settings.validate()?;
    let token = settings
        .access_token
        .resolve()
        .map_err(|e| ConnectorError::config("resolving shopify access_token", e.to_string()))?;
    let webhooks = match &settings.webhook_secret {
        None => None,
        Some(reference) => Some(
            webhook::ShopifyWebhooks::new(reference.resolve().map_err(|e| {
                ConnectorError::config("resolving shopify webhook_secret", e.to_string())
            })?)
            .with_currency(settings.currency),
        ),
    };
    let limiter = RateLimiter::new(settings.requests_per_second, settings.request_burst);
    let http = HttpClient::new(
        Duration::from_secs(settings.request_timeout_secs),
        Some(limiter),
    )?;
    let download = http.without_limiter();
    let gql = Gql::new(
        http,
        settings.endpoint(),
        settings.endpoint_path(),
        token,
        Duration::from_secs(settings.max_cost_wait_secs),
    )
    .with_reserve(settings.stock_reserve_percent);
    Ok(ShopifyConnector {
        settings,
        gql,
        download,
        snapshot: Mutex::new(None),
        webhooks,
    })
}

impl ShopifyConnector {
    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The largest `productVariants(first:)` that stays under the single-query cost limit.
    fn fit(&self) -> usize {
        max_first(
            self.settings.max_query_cost,
            self.settings.inventory_levels_per_variant,
        )
    }

    /// One `productVariants` page: records and page info.
    async fn fetch_variants(
        &self,
        what: &str,
        first: usize,
        after: Option<&str>,
        query: Option<&str>,
    ) -> Result<(Vec<Record>, PageInfo), ConnectorError> {
        let levels = self.settings.inventory_levels_per_variant;
        let variables = json!({
            "first": first,
            "after": after,
            "query": query,
            "levels": levels,
        });
        let answer = self
            .gql
            .run(what, page_cost(first, levels), &variants_query(), variables)
            .await?;
        let connection = answer
            .data
            .get("productVariants")
            .filter(|c| c.is_object())
            .ok_or_else(|| shape_error(&self.gql, what, &answer.data))?;
        let nodes = connection
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| shape_error(&self.gql, what, connection))?;
        let page_info: PageInfo = connection
            .get("pageInfo")
            .map(|p| serde_json::from_value(p.clone()))
            .transpose()
            .map_err(|_| shape_error(&self.gql, what, connection))?
            .unwrap_or_default();
        let mut records = Vec::with_capacity(nodes.len());
        for node in nodes {
            let id = node.get("id").and_then(Value::as_str).unwrap_or("(no id)");
            let variant: VariantNode = match serde_json::from_value(node.clone()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(variant = %id, error = %e, "unreadable shopify variant; skipped");
                    continue;
                }
            };
            let (levels, more): (&[LevelNode], bool) = variant
                .inventory_item
                .as_ref()
                .and_then(|i| i.inventory_levels.as_ref())
                .map(|l| {
                    (
                        l.nodes.as_slice(),
                        l.page_info.as_ref().is_some_and(|p| p.has_next_page),
                    )
                })
                .unwrap_or((&[], false));
            if more {
                tracing::warn!(variant = %variant.id, max_levels = self.settings.inventory_levels_per_variant, "shopify variant is stocked at more locations than inventory_levels_per_variant; stock is incomplete");
            }
            records.push(variant_to_record(&variant, levels, self.settings.currency));
        }
        Ok((records, page_info))
    }

    async fn read_paged(&self, after: Option<&str>) -> Result<Page, ConnectorError> {
        let first = self.settings.page_size.min(self.fit());
        let (records, info) = self
            .fetch_variants("productVariants", first, after, None)
            .await?;
        let next = match (info.has_next_page, info.end_cursor) {
            (true, Some(c)) => Some(format!("{PAGE_CURSOR}{c}")),
            (true, None) => {
                return Err(ConnectorError::protocol(
                    self.gql.operation("productVariants"),
                    "hasNextPage without an endCursor",
                ));
            }
            (false, _) => None,
        };
        Ok(Page { records, next })
    }

    /// Starts a bulk read, waits for it, loads the result and serves the first page.
    async fn read_bulk_start(&self) -> Result<Page, ConnectorError> {
        let id = bulk::start(&self.gql).await?;
        let op = bulk::wait(
            &self.gql,
            &id,
            Duration::from_millis(self.settings.bulk_poll_interval_ms.max(1)),
            Duration::from_secs(self.settings.bulk_timeout_secs),
        )
        .await?;
        let records = self.load(&op).await?;
        Ok(self.serve(&op.id, records, 0))
    }

    /// Serves a later page of a bulk snapshot, reloading the result (kept seven days by
    /// Shopify) when this process no longer holds it.
    async fn read_bulk_page(&self, cursor: &str) -> Result<Page, ConnectorError> {
        let (offset, operation) = cursor
            .split_once(':')
            .and_then(|(o, op)| Some((o.parse::<usize>().ok()?, op)))
            .ok_or_else(|| bad_cursor(cursor))?;
        let held = {
            let guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .filter(|s| s.operation == operation)
                .map(|s| Arc::clone(&s.records))
        };
        let records = match held {
            Some(r) => r,
            None => {
                let op = bulk::fetch(&self.gql, operation).await?;
                if op.status != "COMPLETED" {
                    return Err(ConnectorError::permanent(
                        self.gql.operation("node(BulkOperation)"),
                        format!(
                            "bulk snapshot {operation} is {} and cannot be resumed: start the full read again",
                            op.status
                        ),
                    ));
                }
                self.load(&op).await?
            }
        };
        Ok(self.serve(operation, records, offset))
    }

    async fn load(&self, op: &bulk::BulkOperation) -> Result<Arc<Vec<Record>>, ConnectorError> {
        let records = match &op.url {
            None => Vec::new(),
            Some(url) => {
                let body = bulk::download(
                    &self.download,
                    url,
                    Duration::from_secs(self.settings.bulk_download_timeout_secs),
                )
                .await?;
                bulk::parse_jsonl(&body, self.settings.currency)?
            }
        };
        tracing::info!(operation = %op.id, objects = ?op.object_count, records = records.len(), "shopify bulk snapshot loaded");
        let records = Arc::new(records);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot {
            operation: op.id.clone(),
            records: Arc::clone(&records),
        });
        Ok(records)
    }

    fn serve(&self, operation: &str, records: Arc<Vec<Record>>, offset: usize) -> Page {
        let start = offset.min(records.len());
        let end = start
            .saturating_add(self.settings.page_size)
            .min(records.len());
        let page = records[start..end].to_vec();
        let next = if end < records.len() {
            Some(format!("{BULK_CURSOR}{end}:{operation}"))
        } else {
            // Last page handed out: let the snapshot go.
            let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_some_and(|s| s.operation == operation) {
                *guard = None;
            }
            None
        };
        Page {
            records: page,
            next,
        }
    }
}

fn bad_cursor(cursor: &str) -> ConnectorError {
    ConnectorError::config(
        "shopify read_page",
        format!("cursor {cursor:?} was not issued by this connector"),
    )
}

fn shape_error(gql: &Gql, what: &str, got: &Value) -> ConnectorError {
    ConnectorError::protocol(
        gql.operation(what),
        format!("unexpected answer shape: {}", short(got)),
    )
}

#[async_trait]
impl Connector for ShopifyConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: true,
            writes_stock: true,
            creates_listings: false,
            sale_price: true,
            stock_per_location: true,
            compare_and_set: true,
            max_batch: self.settings.max_input_array,
            max_read_batch: self.fit(),
            stock_lane: true,
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let what = "shop";
        let answer = self.gql.run(what, 1, SHOP_QUERY, json!({})).await?;
        let code = answer
            .data
            .pointer("/shop/currencyCode")
            .and_then(Value::as_str)
            .ok_or_else(|| shape_error(&self.gql, what, &answer.data))?;
        if code != self.settings.currency.code() {
            return Err(ConnectorError::config(
                self.gql.operation(what),
                format!(
                    "the shop sells in {code} but the connector is configured for {} (settings.currency)",
                    self.settings.currency
                ),
            ));
        }
        Ok(())
    }

    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError> {
        match cursor.as_deref() {
            None => match self.settings.full_read {
                FullReadMode::Bulk => self.read_bulk_start().await,
                FullReadMode::Paged => self.read_paged(None).await,
            },
            Some(c) => {
                if let Some(rest) = c.strip_prefix(BULK_CURSOR) {
                    self.read_bulk_page(rest).await
                } else if let Some(after) = c.strip_prefix(PAGE_CURSOR) {
                    self.read_paged(Some(after)).await
                } else {
                    Err(bad_cursor(c))
                }
            }
        }
    }

    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let mut wanted: Vec<String> = skus
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        wanted.sort();
        wanted.dedup();
        let fit = self.fit();
        let mut found = Vec::new();
        for chunk in wanted.chunks(fit) {
            let query = sku_search(chunk);
            let set: std::collections::HashSet<&str> = chunk.iter().map(String::as_str).collect();
            let mut after: Option<String> = None;
            for _ in 0..MAX_SKU_PAGES {
                let (records, info) = self
                    .fetch_variants(
                        "productVariants(query: sku)",
                        chunk.len().min(fit),
                        after.as_deref(),
                        Some(&query),
                    )
                    .await?;
                // Search is by term: keep exact SKU matches only.
                found.extend(
                    records
                        .into_iter()
                        .filter(|r| r.sku.as_deref().is_some_and(|s| set.contains(s))),
                );
                match (info.has_next_page, info.end_cursor) {
                    (true, Some(c)) => after = Some(c),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        push::push(&self.gql, &self.settings, batch).await
    }

    fn stock_window(&self) -> Duration {
        match self.gql.bucket_level() {
            Some(level) if level < 0.5 => Duration::from_millis(self.settings.stock_window_ms),
            _ => Duration::ZERO,
        }
    }

    fn webhooks(&self) -> Option<&dyn omnisync_sdk::webhook::WebhookHandler> {
        self.webhooks
            .as_ref()
            .map(|w| w as &dyn omnisync_sdk::webhook::WebhookHandler)
    }
}
