//! The [`Connector`] trait: what the daemon asks of every external system.
//!
//! A connector reads listings in pages (a full snapshot), reads chosen SKUs back (after a
//! push, or when a webhook hints that they changed), and pushes batches of absolute
//! corrections, answering per item. Batching to the API's limit is the daemon's job (it asks
//! [`Capabilities::max_batch`]); splitting a batch further by API shape (Shopify prices go
//! per product) is the connector's. Connectors never retry on their own: they classify the
//! failure ([`crate::ConnectorError`]) and the caller decides.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;
use crate::model::{Offer, Record};

/// What a connector can do. Fixed for the connector's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// It can write prices.
    pub writes_price: bool,
    /// It can write stock.
    pub writes_stock: bool,
    /// It can create a listing that is missing (an upsert).
    pub creates_listings: bool,
    /// It has a separate sale price field; otherwise the effective price is written as the
    /// price and [`Offer::sale`] is never set.
    pub sale_price: bool,
    /// It holds stock per location; otherwise it holds one quantity under
    /// [`crate::StockLevel::DEFAULT_LOCATION`].
    pub stock_per_location: bool,
    /// Stock writes are compare-and-set against [`Change::Stock::expected`].
    pub compare_and_set: bool,
    /// The most corrections one [`Connector::push`] call accepts (the API's batch limit).
    pub max_batch: usize,
    /// The most records worth asking for in one [`Connector::read_skus`] call.
    pub max_read_batch: usize,
    /// Stock and the other writes go in separate API calls that do not hold each other
    /// up: the daemon then pushes stock corrections in a lane of their own, so a stock
    /// write (a sale elsewhere) never queues behind price writes waiting for the API's
    /// budget. The connector should give its stock calls first claim on that budget.
    pub stock_lane: bool,
}

/// One page of a full read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The records on this page.
    pub records: Vec<Record>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// A change to make in a channel. Always absolute, never a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// Set the offer (regular price, and sale price where the channel has one).
    Offer {
        /// The offer to set.
        offer: Offer,
    },
    /// Set the quantity at one location (the connector's own location code).
    Stock {
        /// The connector's location code.
        location: String,
        /// The quantity to set.
        quantity: i64,
        /// The value we last observed, for compare-and-set; `None` to write unconditionally.
        expected: Option<i64>,
    },
    /// Create a listing the channel should carry but does not.
    Create {
        /// A title, where the channel needs one.
        title: Option<String>,
        /// The offer to list at.
        offer: Offer,
        /// The quantity per location code.
        stock: BTreeMap<String, i64>,
    },
}

/// One correction handed to [`Connector::push`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    /// Deterministic key: the same desired value for the same target gives the same key, so
    /// an API that supports idempotency keys can drop a repeat.
    pub idempotency_key: String,
    /// The canonical SKU.
    pub sku: String,
    /// The listing's id in the channel; `None` for [`Change::Create`].
    pub external_id: Option<String>,
    /// The extra ids the connector reported with the record ([`Record::refs`]).
    pub refs: BTreeMap<String, String>,
    /// What to change.
    pub change: Change,
}

/// What happened to one correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    /// The API accepted it.
    Applied,
    /// Compare-and-set failed: the channel no longer holds the expected value.
    Stale {
        /// The channel's current value, when the API said.
        current: Option<i64>,
    },
    /// The API refused this item.
    Rejected {
        /// The API's reason.
        reason: String,
        /// Whether trying again later may succeed.
        retryable: bool,
    },
}

/// An external system omnisync reads from and, for targets, writes to.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector kind, e.g. `"shopify"`.
    fn kind(&self) -> &'static str;

    /// What this connector can do.
    fn capabilities(&self) -> Capabilities;

    /// A cheap real call that proves credentials and reachability.
    async fn healthcheck(&self) -> Result<(), ConnectorError>;

    /// Reads one page of all listings. `cursor` is `None` for the first page and then the
    /// [`Page::next`] of the previous page.
    async fn read_page(&self, cursor: Option<String>) -> Result<Page, ConnectorError>;

    /// Reads the listings for these SKUs (at most [`Capabilities::max_read_batch`]). SKUs
    /// the system does not carry are simply absent from the answer.
    async fn read_skus(&self, skus: &[String]) -> Result<Vec<Record>, ConnectorError>;

    /// Pushes a batch (at most [`Capabilities::max_batch`]). On `Ok`, the outcomes align with
    /// `batch` index by index. `Err` means the whole call failed and nothing is known to have
    /// been applied.
    async fn push(&self, batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError>;

    /// How long the pusher should gather corrections before its next push call, as the API's
    /// reported usage asks; `None` when the API has room.
    ///
    /// Counted from now: a connector accounts for the time since the usage it bases this on,
    /// so asking again later gives a shorter wait, and a reading left over from a quiet spell
    /// asks for none. The caller waits at least this long (and at least its own push window)
    /// before its next push call. Synchronous and cheap, as it is asked before every push;
    /// the default (for APIs that report no usage) is always `None`.
    fn pacing(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long the stock lane's pusher ([`Capabilities::stock_lane`]) should let stock
    /// corrections collect before its next push call: an API that charges its budget per
    /// call, whatever the call carries, gets fewer and fuller calls while that budget is
    /// short. Asked before every stock push; synchronous and cheap. Default zero.
    fn stock_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The connector's webhook support, if its system sends webhooks.
    fn webhooks(&self) -> Option<&dyn crate::webhook::WebhookHandler> {
        None
    }

    /// Makes sure the system sends this connector's webhooks to the endpoint in its
    /// settings: creates (or re-enables) what is missing and says what it did and found, one
    /// human-readable line per step. Idempotent: a second call changes nothing. The default
    /// answers that the connector cannot do this ([`crate::ErrorKind::Config`]).
    async fn ensure_webhook_subscriptions(&self) -> Result<Vec<String>, ConnectorError> {
        Err(ConnectorError::config(
            "ensuring webhook subscriptions",
            format!(
                "the {} connector cannot create its own webhook subscriptions",
                self.kind()
            ),
        ))
    }
}
