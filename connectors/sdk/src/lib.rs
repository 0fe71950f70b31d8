//! # omnisync-sdk
//!
//! Everything a connector crate needs, and nothing it does not:
//!
//! - [`model`]: the canonical values every connector speaks — [`Money`] in integer minor units,
//!   [`Offer`] (regular + sale price), [`StockLevel`] per location, and the [`Record`] a
//!   connector reads for one listing;
//! - [`connector`]: the object-safe [`Connector`] trait the daemon drives (read pages, read
//!   chosen SKUs back, push batches of [`Correction`]s with per-item [`PushOutcome`]s);
//! - [`error`]: the [`ConnectorError`] taxonomy that decides retry vs dead letter;
//! - [`http`]: a JSON-over-HTTP helper that maps status codes, `Retry-After` and malformed
//!   bodies onto that taxonomy;
//! - [`retry`] and [`ratelimit`]: backoff with jitter (`backon`) and a per-connector request
//!   budget (`governor`);
//! - [`secret`]: secrets by reference (env var, file, systemd credential), redacted in `Debug`;
//! - [`telemetry`]: API calls, latency and throttling counted per connector (`metrics`);
//! - [`webhook`]: verifying and reading incoming webhooks (HMAC in constant time);
//! - [`sim`]: shared plumbing for the loopback simulators every connector ships (server
//!   lifecycle, fault injection, the `/__sim` admin API, outgoing webhook delivery).

pub mod connector;
pub mod error;
pub mod http;
pub mod model;
pub mod notice;
pub mod ratelimit;
pub mod retry;
pub mod secret;
pub mod sim;
pub mod telemetry;
pub mod webhook;

pub use connector::{Capabilities, Change, Connector, Correction, Page, PushOutcome};
pub use error::{ConnectorError, ErrorKind};
pub use model::{Currency, Money, MoneyError, Offer, Record, StockLevel};
pub use secret::SecretRef;
