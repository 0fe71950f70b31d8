//! Configuration: a TOML file plus `OMNISYNC__…` environment overrides (the `config`
//! crate), deserialized strictly (unknown keys refused) and then validated as a whole.
//!
//! Every problem is reported with the file, the dotted key and the reason, and all problems
//! are reported at once, so a bad config stops the start with a complete list. Secrets are
//! never in the file: connectors take references (`env:`, `file:`, `credential:`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use omnisync_sdk::Currency;
use rust_decimal::Decimal;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::planner::price::{
    Discount, FxRate, FxTable, PriceRules, Promotion, Rounding, RoundingMode, SourcePricing,
};
use crate::planner::stock::{StockMode, StockRules};
use crate::schedule::Schedule;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `connectors.webshop.rounding`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// A config that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration in {} ({} problem{}):",
            self.file.display(),
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {}: {}", self.file.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

/// The per-field role a connector plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The truth for this field.
    Source,
    /// Kept in line with the source.
    Target,
    /// Read and reported, never written.
    #[default]
    Observer,
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// `sqlite://PATH` (default `sqlite://omnisync.db`) or `postgres://…`.
    #[serde(default = "default_database")]
    pub database: String,
    /// When the full reconcile runs (cron; 5-field crontab lines accepted).
    #[serde(default = "default_reconcile")]
    pub reconcile_schedule: String,
    /// `human` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Outbox tuning.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// The HTTP server (webhooks, health and readiness).
    #[serde(default)]
    pub http: HttpSection,
    /// How long sold units stay reserved when the source never books the sale.
    #[serde(default = "default_reservation_timeout")]
    pub reservation_timeout_secs: u64,
    /// On SIGTERM, how long pushes in flight may take to finish before the daemon exits
    /// anyway (queued corrections stay in the outbox). Keep it below the unit's
    /// `TimeoutStopSec=`.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
    /// How many days of history (runs, closed drift, push log, observed changes, processed
    /// webhooks, released reservations, resolved dead letters) are kept (default 90). Open
    /// drift, queued or held corrections and open dead letters are never deleted.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

fn default_retention_days() -> u64 {
    90
}

fn default_reservation_timeout() -> u64 {
    3600
}

fn default_drain_timeout() -> u64 {
    30
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            database: default_database(),
            reconcile_schedule: default_reconcile(),
            log_format: default_log_format(),
            outbox: OutboxSection::default(),
            http: HttpSection::default(),
            reservation_timeout_secs: default_reservation_timeout(),
            drain_timeout_secs: default_drain_timeout(),
            retention_days: default_retention_days(),
        }
    }
}

fn default_database() -> String {
    "sqlite://omnisync.db".into()
}
fn default_reconcile() -> String {
    "*/15 * * * *".into()
}
fn default_log_format() -> String {
    "human".into()
}

/// `[daemon.outbox]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// Attempts (each with in-call retries) before a correction is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: i64,
    /// Retries inside one attempt for transient errors (with backoff and jitter).
    #[serde(default = "default_retries")]
    pub retries_per_attempt: usize,
    /// First backoff delay in milliseconds.
    #[serde(default = "default_min_delay")]
    pub min_delay_ms: u64,
    /// Longest backoff delay in milliseconds.
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            max_attempts: default_attempts(),
            retries_per_attempt: default_retries(),
            min_delay_ms: default_min_delay(),
            max_delay_ms: default_max_delay(),
        }
    }
}

fn default_attempts() -> i64 {
    5
}
fn default_retries() -> usize {
    4
}
fn default_min_delay() -> u64 {
    200
}
fn default_max_delay() -> u64 {
    10_000
}

/// `[daemon.http]`: the server for webhooks (`/webhooks/{connector_id}`), `/healthz` and
/// `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address and port to listen on (default `127.0.0.1:8080`; put a TLS-terminating proxy
    /// in front to receive webhooks from the internet).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest webhook body accepted, in bytes (default 1 MiB); larger ones get 413.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// How long the inbox processor collects deliveries into one scoped pass, in
    /// milliseconds (default 50).
    #[serde(default = "default_coalesce")]
    pub coalesce_ms: u64,
    /// A webhook pass takes the writes an API accepted as shown, without reading them back
    /// at once; the inbox processor reads them back (and confirms them, or calls them
    /// `write_no_op`) once no delivery has waited for this long, in milliseconds (default
    /// 1000), and at the latest every 30 s while deliveries keep coming.
    #[serde(default = "default_read_back_delay")]
    pub read_back_delay_ms: u64,
    /// Bearer token guarding the web page and `/api/v1` (a secret reference such as
    /// `credential:dashboard-token`). Required when `listen` is not a loopback address;
    /// once set, every page and API request must carry it (`/healthz`, `/readyz` and the
    /// webhooks, which check their own signatures, stay open).
    #[serde(default)]
    pub token: Option<omnisync_sdk::SecretRef>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_listen(),
            body_limit_bytes: default_body_limit(),
            coalesce_ms: default_coalesce(),
            read_back_delay_ms: default_read_back_delay(),
            token: None,
        }
    }
}

impl HttpSection {
    /// The listen address, parsed (validation has already checked it).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, std::net::AddrParseError> {
        self.listen.trim().parse()
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_body_limit() -> usize {
    1024 * 1024
}
fn default_coalesce() -> u64 {
    50
}

fn default_read_back_delay() -> u64 {
    1000
}

/// `[canonical]`: how the price source states prices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanonical {
    currency: String,
    #[serde(default)]
    prices_include_vat: bool,
    #[serde(default)]
    vat_percent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFx {
    from: String,
    to: String,
    rate: String,
    date: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromotion {
    name: String,
    #[serde(default)]
    skus: Vec<String>,
    #[serde(default)]
    sku_prefix: Option<String>,
    #[serde(default)]
    percent_off: Option<String>,
    #[serde(default)]
    price: Option<String>,
    from: String,
    to: String,
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawRounding {
    Preset(String),
    Rule {
        step: String,
        #[serde(default)]
        ending: Option<String>,
        #[serde(default)]
        mode: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    kind: String,
    #[serde(default)]
    price: Role,
    #[serde(default)]
    stock: Role,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    locations: BTreeMap<String, String>,
    #[serde(default)]
    stock_from: Vec<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    prices_include_vat: Option<bool>,
    #[serde(default)]
    vat_percent: Option<String>,
    #[serde(default)]
    markup_percent: Option<String>,
    #[serde(default)]
    rounding: Option<RawRounding>,
    #[serde(default)]
    safety_buffer: i64,
    #[serde(default)]
    stock_cap: Option<i64>,
    #[serde(default)]
    stock_percent: Option<u32>,
    #[serde(default)]
    max_price_change_percent: Option<String>,
    #[serde(default)]
    notify_secret: Option<omnisync_sdk::SecretRef>,
    #[serde(default)]
    push_window_ms: u64,
    #[serde(default)]
    settings: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonSection,
    canonical: RawCanonical,
    #[serde(default)]
    fx: Vec<RawFx>,
    #[serde(default)]
    promotions: Vec<RawPromotion>,
    connectors: BTreeMap<String, RawConnector>,
    #[serde(default)]
    alerts: crate::alerts::config::RawAlerts,
}

/// Guards that hold a correction for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guards {
    /// Hold a price change larger than this percentage (either way), and any price to zero.
    pub max_price_change_percent: Option<Decimal>,
}

/// One configured connector, validated.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The id (the key under `[connectors]`).
    pub id: String,
    /// The kind (`tryton`, `shopify`, `ebay`, `meta`).
    pub kind: String,
    /// Role for prices.
    pub price: Role,
    /// Role for stock.
    pub stock: Role,
    /// When it is polled (its own read, outside full reconciles).
    pub schedule: Option<Schedule>,
    /// For a stock source: canonical location → this connector's location code.
    pub source_locations: BTreeMap<String, String>,
    /// Price rules, for a price target.
    pub price_rules: Option<PriceRules>,
    /// Stock rules, for a stock target.
    pub stock_rules: Option<StockRules>,
    /// Approval guards.
    pub guards: Guards,
    /// The secret signing change notices (`omnisync_sdk::notice`) for this connector, taken
    /// on `POST /webhooks/{id}`: for systems that send no webhooks of their own.
    pub notify_secret: Option<omnisync_sdk::SecretRef>,
    /// How long this channel's pusher collects corrections from webhook passes before it
    /// pushes them in one batched call, in milliseconds (default 0: at once). For APIs with
    /// small call budgets (Meta's hourly `items_batch` budget): a lone change waits at most
    /// this long.
    pub push_window_ms: u64,
    /// The connector's own settings (checked by its crate).
    pub settings: serde_json::Value,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub file: PathBuf,
    /// `[daemon]`.
    pub daemon: DaemonSection,
    /// The full-reconcile schedule.
    pub reconcile_schedule: Schedule,
    /// How the price source states prices.
    pub source_pricing: SourcePricing,
    /// Exchange rates.
    pub fx: FxTable,
    /// Sales.
    pub promotions: Vec<Promotion>,
    /// Connectors in id order.
    pub connectors: Vec<ConnectorConfig>,
    /// `[alerts]`: rules and notifiers.
    pub alerts: crate::alerts::AlertsConfig,
}

impl Config {
    /// Loads `path`, applies `OMNISYNC__…` environment overrides, and validates, secrets
    /// included (each reference must be readable).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, true)
    }

    /// Like [`Config::load`], but secret references are only parsed, not read: for
    /// `check-config --no-secrets`, which systemd runs as `ExecReload=` where the service's
    /// credentials are not readable.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, secrets: bool) -> Result<Config, ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: key.to_string(),
                reason,
            }],
        };
        if !path.exists() {
            return Err(fail("(file)", "file not found".into()));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("OMNISYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| fail("(file)", e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(built).map_err(|e| {
            let key = e.path().to_string();
            fail(
                if key == "." { "(top level)" } else { &key },
                e.into_inner().to_string(),
            )
        })?;
        validate(path, raw, secrets)
    }

    /// The connector with this id.
    pub fn connector(&self, id: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.id == id)
    }
}

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn decimal(&mut self, key: &str, value: &str) -> Option<Decimal> {
        match Decimal::from_str(value.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.push(key, format!("{value:?} is not a decimal number"));
                None
            }
        }
    }

    fn currency(&mut self, key: &str, value: &str) -> Option<Currency> {
        match value.parse() {
            Ok(c) => Some(c),
            Err(e) => {
                self.push(key, format!("{e}"));
                None
            }
        }
    }

    fn schedule(&mut self, key: &str, value: &str) -> Option<Schedule> {
        match value.parse() {
            Ok(s) => Some(s),
            Err(e) => {
                self.push(key, format!("{e}"));
                None
            }
        }
    }

    fn time(&mut self, key: &str, value: &str) -> Option<OffsetDateTime> {
        match OffsetDateTime::parse(value, &Rfc3339) {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(
                    key,
                    format!(
                        "{value:?} is not an RFC 3339 time such as 2026-11-27T00:00:00+01:00 ({e})"
                    ),
                );
                None
            }
        }
    }
}

fn rounding(
    c: &mut Collector,
    key: &str,
    raw: &RawRounding,
    currency: Currency,
) -> Option<Rounding> {
    let unit = 10i64.pow(currency.exponent());
    let preset = |step: i64, ending: i64| Rounding {
        step,
        ending,
        mode: RoundingMode::Nearest,
    };
    match raw {
        RawRounding::Preset(p) => match p.as_str() {
            "none" => Some(Rounding::NONE),
            "whole" => Some(preset(unit, 0)),
            "x.90" => Some(preset(unit, unit * 90 / 100)),
            "x.99" => Some(preset(unit, unit * 99 / 100)),
            "x9" => Some(preset(unit * 10, unit * 9)),
            "x90" => Some(preset(unit * 100, unit * 90)),
            other => {
                c.push(
                    key,
                    format!(
                        "unknown rounding rule {other:?} (expected none, whole, x.90, x.99, x9, x90 or {{ step, ending, mode }})"
                    ),
                );
                None
            }
        },
        RawRounding::Rule { step, ending, mode } => {
            let to_minor = |c: &mut Collector, k: &str, v: &str| {
                let d = c.decimal(k, v)?;
                let m = d * Decimal::from(unit);
                if m.fract() != Decimal::ZERO || m < Decimal::ZERO {
                    c.push(
                        k,
                        format!("{v} is not a whole number of minor units of {currency}"),
                    );
                    return None;
                }
                i64::try_from(m).ok()
            };
            let step = to_minor(c, &format!("{key}.step"), step)?;
            let ending = match ending {
                Some(e) => to_minor(c, &format!("{key}.ending"), e)?,
                None => 0,
            };
            if step < 1 || ending >= step {
                c.push(key, "need step >= 0.01 and 0 <= ending < step");
                return None;
            }
            let mode = match mode.as_deref().unwrap_or("nearest") {
                "nearest" => RoundingMode::Nearest,
                "up" => RoundingMode::Up,
                "down" => RoundingMode::Down,
                other => {
                    c.push(
                        format!("{key}.mode"),
                        format!("{other:?}: expected nearest, up or down"),
                    );
                    return None;
                }
            };
            Some(Rounding { step, ending, mode })
        }
    }
}

fn validate(file: &Path, raw: RawConfig, secrets: bool) -> Result<Config, ConfigError> {
    let mut c = Collector { problems: vec![] };
    let reconcile_schedule =
        c.schedule("daemon.reconcile_schedule", &raw.daemon.reconcile_schedule);
    if !matches!(raw.daemon.log_format.as_str(), "human" | "json") {
        c.push("daemon.log_format", "expected \"human\" or \"json\"");
    }
    if !(raw.daemon.database.starts_with("sqlite:")
        || raw.daemon.database.starts_with("postgres:")
        || raw.daemon.database.starts_with("postgresql:"))
    {
        c.push("daemon.database", "expected sqlite://PATH or postgres://…");
    }
    if !(1..=36_500).contains(&raw.daemon.retention_days) {
        c.push(
            "daemon.retention_days",
            "must be between 1 and 36500 (days of history to keep)",
        );
    }
    if raw.daemon.outbox.max_attempts < 1 {
        c.push("daemon.outbox.max_attempts", "must be at least 1");
    }
    if let Err(e) = raw.daemon.http.listen_addr() {
        c.push(
            "daemon.http.listen",
            format!(
                "{:?} is not an IP address and port such as 127.0.0.1:8080 or [::]:8080 ({e})",
                raw.daemon.http.listen
            ),
        );
    }
    match &raw.daemon.http.token {
        Some(token) => {
            if secrets && let Err(e) = token.resolve() {
                c.push("daemon.http.token", e.to_string());
            }
        }
        None => {
            if let Ok(addr) = raw.daemon.http.listen_addr()
                && !addr.ip().is_loopback()
            {
                c.push(
                    "daemon.http.token",
                    format!(
                        "required when daemon.http.listen ({addr}) is not a loopback address: \
                         the web page and /api/v1 must not be open to the network \
                         (e.g. token = \"credential:dashboard-token\")"
                    ),
                );
            }
        }
    }
    if raw.daemon.http.body_limit_bytes < 1 {
        c.push("daemon.http.body_limit_bytes", "must be at least 1");
    }
    if raw.daemon.http.read_back_delay_ms > 600_000 {
        c.push(
            "daemon.http.read_back_delay_ms",
            "must be at most 600000 (ten minutes)",
        );
    }
    if raw.daemon.http.coalesce_ms > 60_000 {
        c.push(
            "daemon.http.coalesce_ms",
            "must be at most 60000 (one minute)",
        );
    }

    let source_currency = c.currency("canonical.currency", &raw.canonical.currency);
    let source_vat = match &raw.canonical.vat_percent {
        Some(v) => c.decimal("canonical.vat_percent", v),
        None if raw.canonical.prices_include_vat => {
            c.push(
                "canonical.vat_percent",
                "required when prices_include_vat = true",
            );
            None
        }
        None => Some(Decimal::ZERO),
    };

    let mut rates = Vec::new();
    for (i, fx) in raw.fx.iter().enumerate() {
        let k = format!("fx[{i}]");
        let from = c.currency(&format!("{k}.from"), &fx.from);
        let to = c.currency(&format!("{k}.to"), &fx.to);
        let rate = c.decimal(&format!("{k}.rate"), &fx.rate);
        let date = time::Date::parse(
            &fx.date,
            time::macros::format_description!("[year]-[month]-[day]"),
        );
        if date.is_err() {
            c.push(
                format!("{k}.date"),
                format!("{:?} is not a date like 2026-11-01", fx.date),
            );
        }
        if let Some(r) = rate
            && r <= Decimal::ZERO
        {
            c.push(format!("{k}.rate"), "must be positive");
        }
        if let (Some(from), Some(to), Some(rate), Ok(date)) = (from, to, rate, date) {
            rates.push(FxRate {
                from,
                to,
                rate,
                date,
            });
        }
    }
    let fx = FxTable::new(rates);

    let mut promotions = Vec::new();
    for (i, p) in raw.promotions.iter().enumerate() {
        let k = format!("promotions[{i}]");
        let discount = match (&p.percent_off, &p.price) {
            (Some(pct), None) => c.decimal(&format!("{k}.percent_off"), pct).and_then(|d| {
                if d <= Decimal::ZERO || d >= Decimal::ONE_HUNDRED {
                    c.push(format!("{k}.percent_off"), "must be between 0 and 100");
                    None
                } else {
                    Some(Discount::PercentOff(d))
                }
            }),
            (None, Some(price)) => {
                source_currency.and_then(|cur| match omnisync_sdk::Money::parse_major(price, cur) {
                    Ok(m) => Some(Discount::Price(m)),
                    Err(e) => {
                        c.push(format!("{k}.price"), e.to_string());
                        None
                    }
                })
            }
            _ => {
                c.push(&k, "set exactly one of percent_off or price");
                None
            }
        };
        if p.skus.is_empty() && p.sku_prefix.is_none() {
            c.push(&k, "set skus or sku_prefix");
        }
        for ch in &p.channels {
            if !raw.connectors.contains_key(ch) {
                c.push(format!("{k}.channels"), format!("unknown connector {ch:?}"));
            }
        }
        let from = c.time(&format!("{k}.from"), &p.from);
        let to = c.time(&format!("{k}.to"), &p.to);
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            c.push(&k, "from must be before to");
        }
        if let (Some(discount), Some(from), Some(to)) = (discount, from, to) {
            promotions.push(Promotion {
                name: p.name.clone(),
                skus: p.skus.clone(),
                sku_prefix: p.sku_prefix.clone(),
                discount,
                from,
                to,
                channels: p.channels.clone(),
            });
        }
    }

    // Roles: exactly one price source; each canonical location has exactly one stock source.
    let price_sources: Vec<&String> = raw
        .connectors
        .iter()
        .filter(|(_, r)| r.price == Role::Source)
        .map(|(id, _)| id)
        .collect();
    if raw.connectors.values().any(|r| r.price == Role::Target) && price_sources.len() != 1 {
        c.push(
            "connectors",
            format!(
                "exactly one connector must have price = \"source\" (found {})",
                price_sources.len()
            ),
        );
    }
    let mut stock_location_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, r) in &raw.connectors {
        if r.stock == Role::Source {
            if r.locations.is_empty() {
                c.push(
                    format!("connectors.{id}.locations"),
                    "a stock source must map canonical locations to its location codes",
                );
            }
            for loc in r.locations.keys() {
                if let Some(other) = stock_location_owner.insert(loc, id) {
                    c.push(
                        format!("connectors.{id}.locations.{loc}"),
                        format!("location {loc:?} already has a stock source ({other}); each location needs exactly one"),
                    );
                }
            }
        }
    }

    let mut connectors = Vec::new();
    for (id, r) in &raw.connectors {
        let k = format!("connectors.{id}");
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.push(&k, "connector ids use letters, digits, '-' and '_' only");
        }
        if !crate::registry::KINDS.contains(&r.kind.as_str()) {
            c.push(
                format!("{k}.kind"),
                format!(
                    "unknown kind {:?} (known: {})",
                    r.kind,
                    crate::registry::KINDS.join(", ")
                ),
            );
        } else if let Err(e) = crate::registry::check_settings(&r.kind, &r.settings) {
            c.push(format!("{k}.settings{}", e.0), e.1);
        }
        let schedule = r
            .schedule
            .as_deref()
            .and_then(|s| c.schedule(&format!("{k}.schedule"), s));

        let price_rules = if r.price == Role::Target {
            let currency = match &r.currency {
                Some(cur) => c.currency(&format!("{k}.currency"), cur),
                None => {
                    c.push(format!("{k}.currency"), "required for a price target");
                    None
                }
            };
            let includes_vat = r.prices_include_vat.unwrap_or(false);
            let vat = match &r.vat_percent {
                Some(v) => c.decimal(&format!("{k}.vat_percent"), v),
                None if includes_vat => {
                    c.push(
                        format!("{k}.vat_percent"),
                        "required when prices_include_vat = true",
                    );
                    None
                }
                None => Some(Decimal::ZERO),
            };
            let markup = match &r.markup_percent {
                Some(m) => c.decimal(&format!("{k}.markup_percent"), m),
                None => Some(Decimal::ZERO),
            };
            if let (Some(src), Some(cur)) = (source_currency, currency)
                && !fx.has_pair(src, cur)
            {
                c.push(
                    format!("{k}.currency"),
                    format!("no [[fx]] rate from {src} to {cur}"),
                );
            }
            let rounding = match (&r.rounding, currency) {
                (Some(raw), Some(cur)) => rounding(&mut c, &format!("{k}.rounding"), raw, cur),
                (None, _) => Some(Rounding::NONE),
                _ => None,
            };
            match (currency, vat, markup, rounding) {
                (Some(currency), Some(vat_percent), Some(markup_percent), Some(rounding)) => {
                    Some(PriceRules {
                        currency,
                        includes_vat,
                        vat_percent,
                        markup_percent,
                        rounding,
                    })
                }
                _ => None,
            }
        } else {
            None
        };

        let known = |loc: &str| stock_location_owner.contains_key(loc);
        let stock_rules = if r.stock == Role::Target {
            let mode = match (r.locations.is_empty(), r.stock_from.is_empty()) {
                (false, true) => {
                    for loc in r.locations.keys() {
                        if !known(loc) {
                            c.push(
                                format!("{k}.locations.{loc}"),
                                format!("no stock source provides location {loc:?}"),
                            );
                        }
                    }
                    Some(StockMode::PerLocation(r.locations.clone()))
                }
                (true, false) => {
                    for loc in &r.stock_from {
                        if !known(loc) {
                            c.push(
                                format!("{k}.stock_from"),
                                format!("no stock source provides location {loc:?}"),
                            );
                        }
                    }
                    Some(StockMode::Pooled {
                        from: r.stock_from.clone(),
                        code: omnisync_sdk::StockLevel::DEFAULT_LOCATION.to_string(),
                    })
                }
                (true, true) => {
                    c.push(
                        &k,
                        "a stock target needs `locations` (per-location stock) or `stock_from` (one pooled quantity)",
                    );
                    None
                }
                (false, false) => {
                    c.push(&k, "set either `locations` or `stock_from`, not both");
                    None
                }
            };
            if r.safety_buffer < 0 {
                c.push(format!("{k}.safety_buffer"), "must not be negative");
            }
            if r.stock_percent.is_some_and(|p| p == 0 || p > 100) {
                c.push(format!("{k}.stock_percent"), "must be between 1 and 100");
            }
            mode.map(|mode| StockRules {
                mode,
                safety_buffer: r.safety_buffer.max(0),
                cap: r.stock_cap,
                percent: r.stock_percent,
            })
        } else {
            None
        };
        let guards = Guards {
            max_price_change_percent: r
                .max_price_change_percent
                .as_deref()
                .and_then(|v| c.decimal(&format!("{k}.max_price_change_percent"), v)),
        };
        if secrets
            && let Some(secret) = &r.notify_secret
            && let Err(e) = secret.resolve()
        {
            c.push(format!("{k}.notify_secret"), e.to_string());
        }
        if r.push_window_ms > 3_600_000 {
            c.push(
                format!("{k}.push_window_ms"),
                "must be at most 3600000 (one hour)",
            );
        }
        connectors.push(ConnectorConfig {
            id: id.clone(),
            kind: r.kind.clone(),
            price: r.price,
            stock: r.stock,
            schedule,
            source_locations: if r.stock == Role::Source {
                r.locations.clone()
            } else {
                BTreeMap::new()
            },
            price_rules,
            stock_rules,
            guards,
            notify_secret: r.notify_secret.clone(),
            push_window_ms: r.push_window_ms,
            settings: r.settings.clone(),
        });
    }

    // [alerts]: rules and notifiers (validated in crate::alerts::config).
    let connector_ids = raw.connectors.keys().cloned().collect();
    let (alerts, alert_problems) = crate::alerts::config::validate(&raw.alerts, &connector_ids);
    for (key, reason) in alert_problems {
        c.push(key, reason);
    }

    match (
        c.problems.is_empty(),
        reconcile_schedule,
        source_currency,
        source_vat,
    ) {
        (true, Some(reconcile_schedule), Some(currency), Some(vat_percent)) => Ok(Config {
            file: file.to_path_buf(),
            daemon: raw.daemon,
            reconcile_schedule,
            source_pricing: SourcePricing {
                currency,
                includes_vat: raw.canonical.prices_include_vat,
                vat_percent,
            },
            fx,
            promotions,
            connectors,
            alerts,
        }),
        _ => Err(ConfigError {
            file: file.to_path_buf(),
            problems: c.problems,
        }),
    }
}
