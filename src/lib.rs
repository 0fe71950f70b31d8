//! # omnisync
//!
//! The channel-sync daemon as a library, so the binary, the integration tests and the
//! benchmarks drive the same code. Module map (see ARCHITECTURE.md for the flow):
//!
//! - [`config`]: TOML + environment, strict parsing, whole-config validation;
//! - [`schedule`]: cron schedules (crontab lines accepted);
//! - [`registry`]: connector kinds → connector crates;
//! - [`planner`]: pure reconciliation (canonical × observed × rules → plan);
//! - [`store`]: SQLite/PostgreSQL state, outbox, dead letters, runs;
//! - [`outbox`]: batched, retried, per-item-settled pushes;
//! - [`engine`]: the reconcile pass that ties them together;
//! - [`reservations`]: orders in flight (sold units held off every other channel);
//! - [`report`]: run reports as table, JSON, CSV;
//! - [`views`]: the operators' read models (open drift, one item everywhere, consistency
//!   over time, overview), shared by the CLI and the web side; HTML reports; retention;
//! - [`inbox`]: the durable webhook inbox and the processor that turns deliveries into
//!   scoped reconcile passes;
//! - [`metrics`]: Prometheus metrics at `/metrics` (bounded labels: no SKUs);
//! - [`http`]: the HTTP server — webhooks, `/healthz`, `/readyz`;
//! - [`daemon`]: `omnisync run` — schedules, signals, systemd notify, the HTTP server;
//! - [`demo`]: `omnisync demo` and `omnisync sim` — simulators + a real engine;
//! - [`telemetry`]: logging (human or JSON, `RUST_LOG`).
//! - [`alerts`]: alert rules, incidents (open → resolved, cooldown) and notifiers
//!   (JSON webhook, Slack, SMTP);
//! - [`web`]: the read-only web page and the JSON API `/api/v1` (OpenAPI), token-guarded.

pub mod alerts;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod planner;
pub mod registry;
pub mod report;
pub mod reservations;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod web;
