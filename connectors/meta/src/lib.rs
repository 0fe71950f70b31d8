//! # omnisync-meta
//!
//! The omnisync connector for a Meta (Facebook/Instagram) Commerce catalog, a target for
//! price, sale price and one quantity per listing, which can also create missing listings.
//!
//! - [`connect`] builds a [`MetaConnector`] (an [`omnisync_sdk::Connector`]) from
//!   [`Settings`]; see the adapter module for how reads, writes and failures map onto the
//!   Graph API (`/{catalog_id}/products`, `/{catalog_id}/items_batch`,
//!   `/{catalog_id}/check_batch_request_status`).
//! - Records: `external_id` = `sku` = the item's `retailer_id`; `refs.product_id` = Meta's
//!   id; stock under [`omnisync_sdk::StockLevel::DEFAULT_LOCATION`] (`"default"`); money in
//!   the catalog currency ([`Settings::currency`]).
//! - [`sim`] is a loopback simulator of the same API for tests, demos and rehearsals; it
//!   also sends signed webhooks to subscribers.
//! - [`webhook`]: with [`Settings::app_secret`] set, the connector verifies and reads Graph
//!   webhooks (`X-Hub-Signature-256`, the `hub.challenge` handshake).

mod adapter;
mod graph;
mod price;
mod settings;
pub mod sim;
pub mod webhook;

pub use adapter::{IN_STOCK, MetaConnector, OUT_OF_STOCK, PRODUCT_FIELDS, REF_PRODUCT_ID, connect};
pub use graph::{BUC_HEADER, BucEntry, BucReading, GraphError, GraphErrorBody};
pub use price::{PriceError, format_price, parse_price, parse_write_format};
pub use settings::{
    CreateMethod, DEFAULT_BASE_URL, DEFAULT_GRAPH_VERSION, MAX_BATCH_LIMIT, MAX_PACING_WINDOW_MS,
    Settings, default_throttle_codes,
};

/// The connector kind, as named in the daemon's config.
pub const KIND: &str = "meta";
