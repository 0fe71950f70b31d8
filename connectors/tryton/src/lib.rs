//! # omnisync-tryton
//!
//! The omnisync connector for [Tryton](https://www.tryton.org/) over its JSON-RPC protocol,
//! and a loopback simulator of that protocol.
//!
//! Tryton is the ERP and the **source of truth**: the connector reads each product variant's
//! price (`list_price`, company currency) and its stock at each configured `stock.location`
//! (`quantity` / `forecast_quantity` with `{"locations": [id]}` in the context). It never
//! writes: [`omnisync_sdk::Connector::push`] answers a configuration error.
//!
//! - [`connect`] builds a [`TrytonConnector`] from [`Settings`];
//! - stock location codes are Tryton location ids as strings (`"3"`);
//! - [`sim`] serves the same JSON-RPC calls on loopback for tests and demos.

pub mod connector;
pub mod mapping;
mod rpc;
pub mod settings;
pub mod sim;

pub use connector::{TrytonConnector, connect};
pub use settings::Settings;

/// The connector kind, as used in config and reports.
pub const KIND: &str = "tryton";
