//! # omnisync-ebay
//!
//! The omnisync connector for eBay, a marketplace target: one price and one quantity per
//! listing, kept in line with the ERP.
//!
//! - [`connector`]: the adapter ([`EbayConnector`], built by [`connect`]) over the Sell
//!   Inventory API (`getInventoryItems`, `bulkGetInventoryItem`, `getOffers`,
//!   `bulkUpdatePriceQuantity`) and, for offer prices in full reads, the Sell Feed API's
//!   active inventory report;
//! - [`settings`]: its configuration ([`Settings`]);
//! - [`oauth`]: access tokens: a static user token, or user and application tokens minted
//!   (refresh token and client credentials grants) and refreshed by the connector;
//! - [`notification`]: the Notification API destination and subscriptions the connector
//!   creates for itself ([`omnisync_sdk::Connector::ensure_webhook_subscriptions`]);
//! - [`api`]: the wire format shared by adapter and simulator;
//! - [`report`]: reading and writing the active inventory report file;
//! - [`webhook`]: eBay Commerce Notification API deliveries ([`webhook::EbayWebhooks`]):
//!   `X-EBAY-SIGNATURE` (ECDSA P-256 over the raw body, the key fetched from
//!   `getPublicKey` and cached), the `challenge_code` endpoint validation, and
//!   `ORDER_CONFIRMATION` line items as sold units the daemon reserves;
//! - [`sim`]: a loopback simulator speaking the same API, for tests, the demo and rehearsals;
//!   it also mints OAuth tokens, keeps Notification API destinations and subscriptions, sends
//!   signed notifications (a sale: `ORDER_CONFIRMATION`) to subscribed endpoints and serves
//!   the key.
//!
//! Records: `external_id` = the seller SKU, stock under
//! [`omnisync_sdk::StockLevel::DEFAULT_LOCATION`] (`"default"`), the offer in the
//! marketplace currency (never a sale price: eBay's Inventory API has none), refs
//! `offer_id` (when known) and `listing_id`.
//!
//! Webhooks are on when [`Settings::webhook_endpoint`] and
//! [`Settings::webhook_verification_token`] are set; without them the connector takes none
//! and eBay sales are seen at the next poll.

pub mod api;
pub mod connector;
pub mod notification;
pub mod oauth;
pub mod report;
pub mod settings;
pub mod sim;
pub mod webhook;

pub use connector::{EbayConnector, REF_LISTING_ID, REF_OFFER_ID, connect};
pub use settings::{Settings, SubscriptionToken};

/// The connector kind in the daemon's config.
pub const KIND: &str = "ebay";
