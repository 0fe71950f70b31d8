//! `omnisync-bench`: the benchmarks of the "Real-time" issue, run against the real daemon
//! ([`omnisync::daemon::start`]: HTTP server, durable webhook inbox, inbox processor, the
//! engine on an SQLite file) and the four loopback simulators of `omnisync demo`
//! ([`omnisync::demo::World`]), all in this one process, all on 127.0.0.1.
//!
//! ```sh
//! cargo run --release --bin omnisync-bench -- ingest --json
//! cargo run --release --bin omnisync-bench -- propagation --json
//! cargo run --release --bin omnisync-bench -- oversell --json
//! ```
//!
//! | scenario | what it measures |
//! |---|---|
//! | `ingest` | N correctly signed Shopify deliveries (distinct `X-Shopify-Event-Id`s) from C concurrent clients: deliveries stored per second (200 answers) and the ack latency per request, while the inbox processor runs its scoped passes |
//! | `propagation` | ERP (Tryton simulator) price and stock changes at R per second, each followed by a signed hint naming the SKU: the time until every target simulator shows the new desired value |
//! | `oversell` | the last units of K items sold at once in several channels, the daemon subscribed to the simulators' webhooks: units sold beyond the source's stock |
//!
//! Each scenario prints a human summary on stdout and, with `--json`, one JSON object on the
//! last line with the figures, the parameters and the machine. Progress goes to stderr.
//! Nothing here asserts on timing; the method, the figures and the issue's targets are in
//! BENCHMARKS.md. Every wait is bounded in count and time.
//!
//! Two things differ from `omnisync demo`'s generated config, on purpose: the scheduled full
//! reconcile and the ERP's poll are moved out of the way (`0 0 1 1 *`, no ERP schedule), so
//! a full pass over the catalog does not land in a measurement window by the wall clock.
//! `--coalesce-ms` overrides `daemon.http.coalesce_ms` and `--set KEY=VALUE` any other key
//! (both only when given; the JSON lists them under `parameters`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use omnisync::config::{Config, ConnectorConfig, Role};
use omnisync::daemon::Daemon;
use omnisync::demo::{LOCATIONS, World, WorldOptions, catalog_item};
use omnisync::engine::{Engine, Scope};
use omnisync::planner::price::desired_offer;
use omnisync::report::RunReport;
use omnisync::store::Store;
use omnisync_sdk::http::HttpClient;
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{SimControl, SimRecord};
use omnisync_sdk::webhook::hmac_sha256;
use omnisync_sdk::{Currency, Money, Offer};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// The Shopify connector's id in the demo config.
const WEBSHOP: &str = "webshop";
/// The Meta connector's id in the demo config.
const SOCIAL: &str = "social";
/// The ERP's location code of the central warehouse (the one location every target counts).
const CENTRAL_WH: &str = LOCATIONS[2].1;

// ---- command line ------------------------------------------------------------------------

#[derive(Parser)]
#[command(
    name = "omnisync-bench",
    about = "Benchmarks of the real-time path: webhook ingest, change propagation, oversell."
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Print the figures, the parameters and the machine as one JSON object on the last line.
    #[arg(long, global = true)]
    json: bool,
    /// Override `daemon.http.coalesce_ms` (how long the inbox processor collects deliveries
    /// into one pass; the demo config's default is 50).
    #[arg(long, global = true)]
    coalesce_ms: Option<u64>,
    /// Seed of the pseudo-random choices (SKUs, changes).
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Override one key of the generated demo config, as a dotted TOML path and a TOML value,
    /// e.g. `--set connectors.erp.settings.requests_per_second=200` (repeatable; applied last).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// `items_batch` calls the social catalog's simulator (Meta) admits per rolling hour.
    /// Meta's Business Use Case formula is unconfirmed; the simulator's default is 200. The
    /// daemon paces its calls by the usage Meta reports, so a small budget makes the social
    /// catalog slower under load by design.
    #[arg(long, global = true, default_value_t = WorldOptions::default().social_batch_calls_per_hour)]
    social_batch_budget: u64,
}

#[derive(Subcommand)]
enum Scenario {
    /// Signed webhook deliveries from concurrent clients: stored per second, ack latency.
    Ingest(IngestArgs),
    /// ERP changes at a fixed rate: time until every target shows the new desired value.
    Propagation(PropagationArgs),
    /// The last units sold at once in several channels: units sold beyond the source's stock.
    Oversell(OversellArgs),
}

/// The Shopify topic the `ingest` deliveries carry.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
enum Topic {
    /// Names an inventory item id, mapped to a SKU through the stored bindings.
    #[value(name = "inventory_levels/update")]
    #[serde(rename = "inventory_levels/update")]
    InventoryLevels,
    /// Names the variants' SKUs.
    #[value(name = "products/update")]
    #[serde(rename = "products/update")]
    Products,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::InventoryLevels => "inventory_levels/update",
            Topic::Products => "products/update",
        }
    }
}

#[derive(Args, Clone, Debug, Serialize)]
struct IngestArgs {
    /// Deliveries to send (each with its own event id).
    #[arg(long, default_value_t = 20_000)]
    webhooks: usize,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Catalog size (the deliveries name these SKUs at random).
    #[arg(long, default_value_t = 1000)]
    skus: usize,
    /// The Shopify topic of the deliveries.
    #[arg(long, value_enum, default_value_t = Topic::InventoryLevels)]
    topic: Topic,
    /// Worker threads of the load generator's own runtime (the daemon keeps the main one).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Longest wait for the processor to settle every stored delivery afterwards.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Diagnosis: store the same deliveries straight through the store's `inbox_insert`
    /// (what the HTTP handler calls after the signature check), from the same number of
    /// concurrent tasks, without HTTP, signature check or parsing — the store's own ceiling.
    #[arg(long)]
    store_only: bool,
}

#[derive(Args, Clone, Debug, Serialize)]
struct PropagationArgs {
    /// Source changes per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long changes are made, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Catalog size; must be at least rate × seconds (each SKU changes once).
    #[arg(long, default_value_t = 5000)]
    skus: usize,
    /// A change not shown by every target this long after it was made counts as not arrived.
    #[arg(long, default_value_t = 10_000)]
    bound_ms: u64,
    /// How often the targets are checked (the resolution of the latencies).
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Most hint POSTs in flight at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// How each change is announced: `notice` = a signed change notice from the ERP
    /// (`POST /webhooks/erp`, what a trigger or script next to the ERP sends); `webshop` = a
    /// signed Shopify `products/update` naming the SKU (the webshop then re-reads it too).
    #[arg(long, value_enum, default_value_t = Hint::Notice)]
    hint: Hint,
    /// Skip the warm-up that lets the daemon learn every eBay offer id before the clock
    /// starts (eBay's price reads carry no offer id, so the first write of each SKU after a
    /// start costs a `GET /offer` look-up; a running daemon has them from earlier reads).
    #[arg(long)]
    cold_offer_ids: bool,
    /// Which source changes are made: `mixed` (half prices, half stock), `stock` or `price`.
    #[arg(long, value_enum, default_value_t = Changes::Mixed)]
    changes: Changes,
    /// Subscribe the daemon to the targets' webhooks, as in production: every write the
    /// daemon makes comes back from the channel as a webhook (Shopify
    /// `inventory_levels/update` and `products/update`, Meta's product changes, eBay's
    /// notifications) and is handled like any other delivery.
    #[arg(long)]
    channel_webhooks: bool,
}

/// The kinds of source change the propagation benchmark makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Changes {
    /// Half prices, half central-warehouse stock.
    Mixed,
    /// Central-warehouse stock only (sales, receipts).
    Stock,
    /// Prices only.
    Price,
}

/// How the propagation benchmark announces a source change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Hint {
    /// A change notice from the ERP.
    Notice,
    /// A Shopify `products/update`.
    Webshop,
}

#[derive(Args, Clone, Debug, Serialize)]
struct OversellArgs {
    /// Items whose last units are sold.
    #[arg(long, default_value_t = 50)]
    items: usize,
    /// Selling channels per item, a value or a range cycled over the items (2 = webshop +
    /// social, 3 = + marketplace).
    #[arg(long, default_value = "2..3")]
    channels: Span,
    /// Source stock per item, a value or a range cycled over the items (all of it in the
    /// central warehouse, the one location every channel counts).
    #[arg(long, default_value = "1..3")]
    stock: Span,
    /// Pause between two purchases by the same buyer; 0 = each buyer takes every unit its
    /// channel shows back to back (every channel at the same instant).
    #[arg(long, default_value_t = 300)]
    gap_ms: u64,
    /// After a refusal (the channel shows 0), a buyer tries again this often until the window ends.
    #[arg(long, default_value_t = 50)]
    retry_ms: u64,
    /// How long buyers keep buying, from the common start.
    #[arg(long, default_value_t = 3000)]
    window_ms: u64,
    /// Set the marketplace's and the social catalog's safety buffers to 0 (the demo config
    /// holds back 2 and 1 units).
    #[arg(long)]
    no_buffers: bool,
}

/// An inclusive range `lo..hi`, or a single value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: u32,
    hi: u32,
}

impl Span {
    /// The value for item `i`: the range cycled.
    fn pick(self, i: usize) -> u32 {
        self.lo + (i % (self.hi - self.lo + 1) as usize) as u32
    }
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a whole number"))
        };
        let (lo, hi) = match s.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
            None => (num(s)?, num(s)?),
        };
        if lo > hi {
            return Err(format!("{s:?}: the range is empty"));
        }
        Ok(Span { lo, hi })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}..{}", self.lo, self.hi)
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---- small tools -------------------------------------------------------------------------

/// SplitMix64: deterministic choices from `--seed`, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Standard base64 with padding (what `X-Shopify-Hmac-Sha256` carries).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |k: usize| u32::from(chunk.get(k).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `X-Shopify-Hmac-Sha256` for `body` under the simulator's demo client secret, which the
/// demo config gives the webshop connector as its `webhook_secret`.
fn shopify_signature(body: &[u8]) -> String {
    base64(&hmac_sha256(
        omnisync_shopify::sim::DEMO_WEBHOOK_SECRET.as_bytes(),
        body,
    ))
}

/// The number at the end of a Shopify gid (`gid://shopify/InventoryItem/42` → 42).
fn gid_number(gid: &str) -> Option<u64> {
    gid.rsplit('/').next().and_then(|n| n.parse().ok())
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

/// Count, mean and percentiles in milliseconds.
fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "mean_ms": round3(h.mean() / 1000.0),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// One line for the human summary.
fn brief(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    )
}

/// The machine the figures were taken on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let processors = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(processors);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    json!({
        "nproc": nproc,
        "processors_in_cpuinfo": processors,
        "cpu_model": field("model name"),
        "cpu_mhz": field("cpu MHz"),
        "memory_total_bytes": mem_kib.map(|k| k * 1024),
        "memory_total_gib": mem_kib.map(|k| round3(k as f64 / 1024.0 / 1024.0)),
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// CPU time per thread kind of this process, in clock ticks (utime + stime from
/// `/proc/self/task/*/stat`), threads grouped by name with trailing digits dropped
/// (`sqlx-sqlite-worker-3` → `sqlx-sqlite-worker-`). Threads that ended are not counted.
fn thread_cpu() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit());
        // After the name: state (field 3) … utime (14), stime (15).
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        *out.entry(name.to_string()).or_default() += tick(11) + tick(12);
    }
    out
}

/// Cores kept busy per thread kind between two [`thread_cpu`] samples taken `secs` apart
/// (ticks of 10 ms, the Linux default `CLK_TCK` of 100).
fn cpu_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, secs: f64) -> Value {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    let mut total = 0.0;
    for (name, t) in after {
        let d = t.saturating_sub(before.get(name).copied().unwrap_or(0)) as f64 / 100.0;
        total += d;
        if d > 0.0 {
            by.insert(name.clone(), round3(d / secs));
        }
    }
    json!({ "cores_busy": round3(total / secs), "cores_busy_by_thread": by })
}

// ---- the daemon and its simulators -------------------------------------------------------

/// The four simulators, the daemon on a temporary SQLite file, and its HTTP address.
struct Harness {
    world: World,
    engine: Arc<Engine>,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

/// Returns the sub-table at `key`, creating it when absent.
fn sub_table<'a>(t: &'a mut toml::Table, key: &str) -> Result<&'a mut toml::Table> {
    t.entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("config: {key} is not a table"))
}

/// Applies one `--set KEY=VALUE`: a dotted path into the config and a TOML value (a bare word
/// that is not valid TOML is taken as a string).
fn set_key(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment:?}: expected KEY=VALUE"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut path: Vec<&str> = key.trim().split('.').collect();
    let last = path
        .pop()
        .filter(|k| !k.is_empty())
        .with_context(|| format!("--set {assignment:?}: empty key"))?;
    let mut table = doc;
    for part in path {
        table = sub_table(table, part)?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl Harness {
    /// Starts the simulators, writes the demo config (edited by `edit`), seeds `skus` items
    /// in sync everywhere, opens the store, starts the daemon on 127.0.0.1:0 and waits until
    /// its first full pass has finished (`/readyz`).
    async fn start(
        cli: &Cli,
        skus: usize,
        edit: impl FnOnce(&mut toml::Table) -> Result<()>,
    ) -> Result<Harness> {
        let coalesce_ms = cli.coalesce_ms;
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let options = WorldOptions {
            social_batch_calls_per_hour: cli.social_batch_budget,
        };
        let world = World::start_with(0, &options).await?;
        let database = format!("sqlite://{}", dir.path().join("omnisync.db").display());
        let now = OffsetDateTime::now_utc();
        let mut doc: toml::Table = toml::from_str(&world.config_toml(&database, now)?)?;
        {
            let daemon = sub_table(&mut doc, "daemon")?;
            daemon.insert("reconcile_schedule".into(), "0 0 1 1 *".into());
            if let Some(ms) = coalesce_ms {
                sub_table(daemon, "http")?.insert("coalesce_ms".into(), (ms as i64).into());
            }
            let connectors = sub_table(&mut doc, "connectors")?;
            sub_table(connectors, "erp")?.remove("schedule");
        }
        edit(&mut doc)?;
        for o in &cli.overrides {
            set_key(&mut doc, o)?;
        }
        let path = dir.path().join("omnisync.toml");
        std::fs::write(&path, toml::to_string(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let config = Config::load(&path).map_err(|e| anyhow!("{e}"))?;
        world.seed_in_sync(&config, skus, now)?;
        let store = Store::open(&database).await?;
        let engine = Arc::new(Engine::new(config, store)?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let daemon = omnisync::daemon::start(engine.clone(), listener)?;
        let started = Instant::now();
        while !daemon.readiness().is_ready() {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the daemon's first full pass did not finish within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        progress(format!(
            "daemon ready on {} after its first full pass over {skus} SKUs ({:.1} s)",
            daemon.local_addr(),
            started.elapsed().as_secs_f64()
        ));
        Ok(Harness {
            world,
            engine,
            daemon,
            _dir: dir,
        })
    }

    fn config(&self) -> &Config {
        self.engine.config()
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    fn webhook_url(&self, connector: &str) -> String {
        format!("http://{}/webhooks/{connector}", self.daemon.local_addr())
    }

    /// The target channels, with their simulators.
    fn targets(&self) -> Vec<Target> {
        self.config()
            .connectors
            .iter()
            .filter(|c| c.price == Role::Target || c.stock == Role::Target)
            .filter_map(|c| {
                let sim: Arc<dyn SimControl> = match c.kind.as_str() {
                    omnisync_shopify::KIND => self.world.shopify.clone(),
                    omnisync_ebay::KIND => self.world.ebay.clone(),
                    omnisync_meta::KIND => self.world.meta.clone(),
                    _ => return None,
                };
                Some(Target {
                    sale_field: c.kind != omnisync_ebay::KIND,
                    cfg: c.clone(),
                    sim,
                })
            })
            .collect()
    }

    /// Every simulator's request counters.
    fn sim_stats(&self) -> Value {
        let w = &self.world;
        json!({
            "erp": w.tryton.counters().snapshot(),
            WEBSHOP: w.shopify.counters().snapshot(),
            "marketplace": w.ebay.counters().snapshot(),
            SOCIAL: w.meta.counters().snapshot(),
        })
    }

    async fn shutdown(self) {
        self.daemon.shutdown().await;
        self.world.shutdown().await;
    }
}

fn progress(line: impl fmt::Display) {
    eprintln!("[bench] {line}");
}

/// Id of the last recorded run (0 when none).
async fn last_run_id(store: &Store) -> Result<i64> {
    let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM runs")
        .fetch_one(store.pool())
        .await
        .context("reading the runs")?;
    Ok(id.unwrap_or(0))
}

/// What the passes recorded after run `after` did: count, SKUs per scoped pass, durations.
async fn pass_stats(store: &Store, after: i64) -> Result<Value> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT scope, report FROM runs WHERE id > $1 ORDER BY id")
            .bind(after)
            .fetch_all(store.pool())
            .await
            .context("reading the runs")?;
    let mut scoped = histogram()?;
    let mut full = 0u64;
    let mut skus = 0u64;
    let mut failed = 0u64;
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    for (scope, report) in &rows {
        let Some(report) = report else { continue };
        let r: RunReport = serde_json::from_str(report).context("a stored run report")?;
        if r.status != "ok" {
            failed += 1;
        }
        match scope.strip_prefix("skus=") {
            Some(n) => {
                // "skus=36", "skus=36 webhook", "skus=36 read-back".
                let count = n.split(' ').next().unwrap_or_default();
                skus += count.parse::<u64>().unwrap_or(0);
                record(&mut scoped, Duration::from_millis(r.duration_ms));
                for (k, v) in r.phase_ms {
                    *phases.entry(k).or_default() += v;
                }
            }
            None => full += 1,
        }
    }
    let n = scoped.len();
    let per_pass = |total: u64| {
        if n == 0 {
            0.0
        } else {
            round3(total as f64 / n as f64)
        }
    };
    Ok(json!({
        "runs": rows.len(),
        "full_passes": full,
        "failed_passes": failed,
        "scoped_passes": n,
        "skus_per_scoped_pass_mean": per_pass(skus),
        "scoped_pass_duration": summary(&scoped),
        "scoped_pass_phase_ms_mean": phases.iter().map(|(k, v)| (k.clone(), per_pass(*v))).collect::<BTreeMap<_, _>>(),
    }))
}

async fn inbox_count(store: &Store, status: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM webhook_inbox WHERE status = $1")
        .bind(status.to_string())
        .fetch_one(store.pool())
        .await
        .context("counting the inbox")
}

/// Waits until nothing is moving: no simulator webhook in flight, no pending inbox row, no
/// correction queued — five times in a row, 100 ms apart. `false` when `limit` passed first.
async fn settle(h: &Harness, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let idle = h
            .world
            .shopify
            .wait_webhooks_idle(Duration::from_millis(1))
            .await
            && h.world
                .meta
                .wait_webhooks_idle(Duration::from_millis(1))
                .await
            && h.world
                .ebay
                .wait_webhooks_idle(Duration::from_millis(1))
                .await;
        let pending = inbox_count(h.store(), "pending").await?;
        let mut queued = 0;
        for t in h.targets() {
            queued += h.store().outbox_depth(&t.cfg.id).await?.0;
        }
        if idle && pending == 0 && queued == 0 {
            quiet += 1;
            if quiet >= 5 {
                return Ok(true);
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

// ---- expected values ---------------------------------------------------------------------

/// A target channel and its simulator.
#[derive(Clone)]
struct Target {
    cfg: ConnectorConfig,
    sim: Arc<dyn SimControl>,
    /// Whether the channel has a sale-price field (eBay has one price).
    sale_field: bool,
}

/// What a target should show for one SKU.
#[derive(Clone, Debug, PartialEq)]
struct Want {
    offer: Offer,
    stock: BTreeMap<String, i64>,
}

/// What `t` should show for the ERP's `erp` record under the config's rules with no orders in
/// flight: the planner's own functions ([`desired_offer`], [`omnisync::planner::stock::StockRules::desired`])
/// fed the way the engine feeds them (ERP location codes mapped to the canonical locations).
fn expected(config: &Config, t: &Target, erp: &SimRecord, now: OffsetDateTime) -> Result<Want> {
    let rules = t
        .cfg
        .price_rules
        .as_ref()
        .context("a target without price rules")?;
    let offer = desired_offer(
        &erp.sku,
        &t.cfg.id,
        erp.offer.price,
        &config.source_pricing,
        rules,
        &config.fx,
        &config.promotions,
        now,
        t.sale_field,
    )?;
    let canonical: BTreeMap<String, i64> = LOCATIONS
        .iter()
        .map(|(canon, code)| {
            (
                (*canon).to_string(),
                erp.stock.get(*code).copied().unwrap_or(0),
            )
        })
        .collect();
    let stock = t
        .cfg
        .stock_rules
        .as_ref()
        .map(|r| r.desired(&canonical, &BTreeMap::new()))
        .unwrap_or_default();
    Ok(Want { offer, stock })
}

/// Whether `t`'s simulator shows `want` for `sku` now (the offer compared as the planner
/// compares it: a channel without a sale field by its one effective price).
fn shows(t: &Target, sku: &str, want: &Want) -> bool {
    let Some(r) = t.sim.record(sku) else {
        return false;
    };
    let offer = if t.sale_field {
        r.offer
    } else {
        Offer::regular(r.offer.effective())
    };
    offer == want.offer && r.stock == want.stock
}

/// Checks the expectation function against the converged state: for every SKU and target,
/// does the simulator show what [`expected`] says? Returns (checked, mismatched).
fn check_expectations(h: &Harness, skus: usize) -> Result<(u64, u64)> {
    let now = OffsetDateTime::now_utc();
    let targets = h.targets();
    let (mut checked, mut bad) = (0, 0);
    for i in 0..skus {
        let sku = catalog_item(i).sku;
        let erp = h
            .world
            .tryton
            .record(&sku)
            .with_context(|| format!("{sku} is not in the ERP"))?;
        for t in &targets {
            checked += 1;
            if !shows(t, &sku, &expected(h.config(), t, &erp, now)?) {
                bad += 1;
            }
        }
    }
    Ok((checked, bad))
}

/// The ids Shopify would name a SKU by: (product, variant, inventory item), from the
/// bindings the daemon stored in its first pass.
async fn shopify_ids(store: &Store) -> Result<BTreeMap<String, (u64, u64, u64)>> {
    let mut out = BTreeMap::new();
    for b in store.binding_ids(WEBSHOP).await? {
        let num = |key: &str| b.refs.get(key).and_then(|g| gid_number(g));
        let (Some(product), Some(variant), Some(item)) = (
            num("product_id"),
            gid_number(&b.external_id),
            num("inventory_item_id"),
        ) else {
            continue;
        };
        out.insert(b.sku.clone(), (product, variant, item));
    }
    Ok(out)
}

/// A Shopify `products/update` body naming `sku` (REST shape, as Shopify sends it).
fn products_update_body(sku: &str, ids: (u64, u64, u64)) -> String {
    let (product, variant, item) = ids;
    json!({
        "id": product,
        "title": sku,
        "updated_at": now_rfc3339(),
        "variants": [{
            "id": variant,
            "product_id": product,
            "sku": sku,
            "inventory_item_id": item,
        }],
    })
    .to_string()
}

/// Shopify's webhook headers for one delivery, signed.
fn shopify_headers(topic: &str, event_id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-shopify-topic", topic.into()),
        ("x-shopify-hmac-sha256", shopify_signature(body)),
        (
            "x-shopify-shop-domain",
            omnisync_shopify::sim::DEMO_SHOP_DOMAIN.into(),
        ),
        ("x-shopify-api-version", "2026-01".into()),
        ("x-shopify-webhook-id", format!("wh-{event_id}")),
        ("x-shopify-event-id", event_id.into()),
        ("x-shopify-triggered-at", now_rfc3339()),
    ]
}

/// A nonce for event ids, different between runs.
fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---- ingest ------------------------------------------------------------------------------

/// One prepared delivery (built and signed before the clock starts).
struct Delivery {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

/// What the load generator saw.
struct LoadOutcome {
    ack: Histogram<u64>,
    accepted: u64,
    duplicates: u64,
    other_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Cores busy during the timed window, per thread kind.
    cpu: Value,
}

/// The `--store-only` diagnosis: every delivery stored with [`Store::inbox_insert`] from
/// `concurrency` tasks on the main runtime (the daemon's), as the HTTP handler stores it.
async fn store_load(
    store: Store,
    deliveries: Arc<Vec<Delivery>>,
    concurrency: usize,
) -> Result<LoadOutcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (store, deliveries, next) = (store.clone(), deliveries.clone(), next.clone());
        tasks.spawn(async move {
            let mut ack = histogram()?;
            let (mut accepted, mut duplicates, mut errors) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = deliveries.get(i) else { break };
                let headers: omnisync_sdk::webhook::Headers = d
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), v.clone()))
                    .collect();
                let event_id = headers
                    .get("x-shopify-event-id")
                    .cloned()
                    .unwrap_or_default();
                let topic = headers.get("x-shopify-topic").cloned();
                let body = String::from_utf8_lossy(&d.body).into_owned();
                let t = Instant::now();
                let stored = store
                    .inbox_insert(&omnisync::inbox::NewDelivery {
                        connector: WEBSHOP,
                        event_id: &event_id,
                        topic: topic.as_deref(),
                        received_at: omnisync::outbox::now_ms(),
                        headers: &headers,
                        body: &body,
                        status: omnisync::inbox::InboxStatus::Pending,
                        reason: None,
                    })
                    .await;
                record(&mut ack, t.elapsed());
                match stored {
                    Ok(Some(_)) => accepted += 1,
                    Ok(None) => duplicates += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            anyhow::Ok((ack, accepted, duplicates, errors, first_error))
        });
    }
    let mut out = LoadOutcome {
        ack: histogram()?,
        accepted: 0,
        duplicates: 0,
        other_status: BTreeMap::new(),
        transport_errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        cpu: Value::Null,
    };
    while let Some(joined) = tasks.join_next().await {
        let (ack, accepted, duplicates, errors, first_error) =
            joined.context("a store task panicked")??;
        out.ack
            .add(&ack)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        out.accepted += accepted;
        out.duplicates += duplicates;
        if errors > 0 {
            *out.other_status.entry(500).or_default() += errors;
        }
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.elapsed = started.elapsed();
    out.cpu = cpu_between(&cpu_before, &thread_cpu(), out.elapsed.as_secs_f64());
    Ok(out)
}

/// Sends every delivery from `concurrency` tasks on a runtime of its own, so the daemon keeps
/// the main runtime's worker threads; returns once every answer is in.
async fn run_load(
    url: String,
    deliveries: Arc<Vec<Delivery>>,
    concurrency: usize,
    threads: usize,
    health_url: String,
) -> Result<LoadOutcome> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name("bench-client")
                .enable_all()
                .build()
                .context("building the load generator's runtime")
                .and_then(|rt| rt.block_on(load(url, deliveries, concurrency, health_url)));
            // The receiver is gone only when the benchmark was abandoned.
            drop(tx.send(outcome));
        })
        .context("starting the load generator thread")?;
    rx.await.context("the load generator thread died")?
}

async fn load(
    url: String,
    deliveries: Arc<Vec<Delivery>>,
    concurrency: usize,
    health_url: String,
) -> Result<LoadOutcome> {
    let client = HttpClient::new(Duration::from_secs(60), None)
        .map_err(|e| anyhow!("building the HTTP client: {e}"))?
        .raw()
        .clone();
    // Open the connections first (GET /healthz stores nothing), so connects are not timed.
    let warm =
        futures::future::join_all((0..concurrency).map(|_| client.get(health_url.as_str()).send()))
            .await;
    if let Some(Err(e)) = warm.into_iter().find(|r| r.is_err()) {
        bail!("GET /healthz failed: {e}");
    }

    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, deliveries, next) = (
            client.clone(),
            url.clone(),
            deliveries.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let mut out = LoadOutcome {
                ack: histogram()?,
                accepted: 0,
                duplicates: 0,
                other_status: BTreeMap::new(),
                transport_errors: 0,
                first_error: None,
                elapsed: Duration::ZERO,
                cpu: Value::Null,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = deliveries.get(i) else { break };
                let mut req = client.post(url.as_str()).body(d.body.clone());
                for (k, v) in &d.headers {
                    req = req.header(*k, v.as_str());
                }
                let t = Instant::now();
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let text = resp.text().await.unwrap_or_default();
                        record(&mut out.ack, t.elapsed());
                        match (status, text.as_str()) {
                            (200, "accepted") => out.accepted += 1,
                            (200, "duplicate") => out.duplicates += 1,
                            _ => {
                                *out.other_status.entry(status).or_default() += 1;
                                out.first_error
                                    .get_or_insert_with(|| format!("HTTP {status}: {text}"));
                            }
                        }
                    }
                    Err(e) => {
                        out.transport_errors += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            anyhow::Ok(out)
        });
    }
    let mut total = LoadOutcome {
        ack: histogram()?,
        accepted: 0,
        duplicates: 0,
        other_status: BTreeMap::new(),
        transport_errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        cpu: Value::Null,
    };
    while let Some(joined) = tasks.join_next().await {
        let part = joined.context("a client task panicked")??;
        total
            .ack
            .add(&part.ack)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        total.accepted += part.accepted;
        total.duplicates += part.duplicates;
        total.transport_errors += part.transport_errors;
        for (k, v) in part.other_status {
            *total.other_status.entry(k).or_default() += v;
        }
        if total.first_error.is_none() {
            total.first_error = part.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total.cpu = cpu_between(&cpu_before, &thread_cpu(), total.elapsed.as_secs_f64());
    Ok(total)
}

async fn ingest(cli: &Cli, a: &IngestArgs) -> Result<Value> {
    if a.skus == 0 || a.webhooks == 0 || a.concurrency == 0 {
        bail!("--skus, --webhooks and --concurrency must be at least 1");
    }
    let h = Harness::start(cli, a.skus, |_| Ok(())).await?;
    let ids = shopify_ids(h.store()).await?;
    if ids.is_empty() {
        bail!("the daemon stored no webshop bindings after its first pass");
    }
    let ids: Vec<(String, (u64, u64, u64))> = ids.into_iter().collect();
    let locations: Vec<u64> = h
        .world
        .shopify
        .options()
        .locations
        .iter()
        .filter_map(|g| gid_number(g))
        .collect();
    let topic = a.topic.name();
    let run = nonce();
    let mut rng = Rng(cli.seed);
    let deliveries: Vec<Delivery> = (0..a.webhooks)
        .map(|i| {
            let (sku, ids) = &ids[rng.below(ids.len())];
            let body = match a.topic {
                Topic::InventoryLevels => {
                    let location = locations[rng.below(locations.len())];
                    let available = h
                        .world
                        .shopify
                        .record(sku)
                        .and_then(|r| {
                            r.stock
                                .get(&format!("gid://shopify/Location/{location}"))
                                .copied()
                        })
                        .unwrap_or(0);
                    json!({
                        "inventory_item_id": ids.2,
                        "location_id": location,
                        "available": available,
                        "updated_at": now_rfc3339(),
                    })
                    .to_string()
                }
                Topic::Products => products_update_body(sku, *ids),
            };
            let event_id = format!("bench-{run:x}-{i}");
            Delivery {
                headers: shopify_headers(topic, &event_id, body.as_bytes()),
                body: Bytes::from(body),
            }
        })
        .collect();
    let body_bytes: usize = deliveries.iter().map(|d| d.body.len()).sum();
    progress(format!(
        "sending {} signed {topic} deliveries from {} concurrent clients",
        a.webhooks, a.concurrency
    ));

    let runs_before = last_run_id(h.store()).await?;
    let stats_before = h.daemon.webhook_stats().snapshot();
    let load_started = Instant::now();
    let out = if a.store_only {
        store_load(h.store().clone(), Arc::new(deliveries), a.concurrency).await?
    } else {
        run_load(
            h.webhook_url(WEBSHOP),
            Arc::new(deliveries),
            a.concurrency,
            a.client_threads,
            format!("http://{}/healthz", h.daemon.local_addr()),
        )
        .await?
    };
    let at_end = h.daemon.webhook_stats().snapshot();
    let processed_during = at_end.processed - stats_before.processed;
    let passes_during = at_end.passes - stats_before.passes;
    let stored = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM webhook_inbox WHERE connector = $1 AND event_id LIKE $2",
    )
    .bind(WEBSHOP)
    .bind(format!("bench-{run:x}-%"))
    .fetch_one(h.store().pool())
    .await
    .context("counting stored deliveries")?;

    progress("load done; waiting for the processor to settle every stored delivery");
    let drain_started = Instant::now();
    let drain_limit = Duration::from_secs(a.drain_timeout_secs);
    let mut pending_left = inbox_count(h.store(), "pending").await?;
    while pending_left > 0 && drain_started.elapsed() < drain_limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pending_left = inbox_count(h.store(), "pending").await?;
    }
    let drained = pending_left == 0;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let after = h.daemon.webhook_stats().snapshot();
    let settled_rows = after.processed - stats_before.processed;
    let settle_secs = secs_since(load_started);
    let passes = pass_stats(h.store(), runs_before).await?;
    let sims = h.sim_stats();

    let secs = out.elapsed.as_secs_f64();
    let per_sec = out.accepted as f64 / secs;
    let p99 = ms(out.ack.value_at_quantile(0.99));
    let errors: u64 = out.other_status.values().sum::<u64>() + out.transport_errors;
    println!(
        "== ingest: {} signed {topic} deliveries, {} concurrent clients, {} SKUs",
        a.webhooks, a.concurrency, a.skus
    );
    println!(
        "stored (200 accepted): {} in {secs:.2} s = {per_sec:.0} deliveries/s",
        out.accepted
    );
    println!("ack latency:  {}", brief(&out.ack));
    println!(
        "duplicates: {}   errors: {errors} (HTTP {:?}, transport {}){}",
        out.duplicates,
        out.other_status,
        out.transport_errors,
        out.first_error
            .as_deref()
            .map(|e| format!("   first: {e}"))
            .unwrap_or_default()
    );
    println!("CPU during the load: {}", out.cpu);
    println!(
        "inbox rows with these event ids: {stored}; processed while loading: {processed_during} rows in {passes_during} scoped passes"
    );
    println!(
        "after the load: {} after {drain_secs:.1} s more; the processor settled {settled_rows} rows \
         ({:.0}/s since the load began) in {} scoped passes",
        if drained {
            "every delivery settled".to_string()
        } else {
            format!("{pending_left} deliveries still pending")
        },
        settled_rows as f64 / settle_secs,
        passes["scoped_passes"]
    );
    println!(
        "targets: >= 10000 deliveries/s: {}; p99 ack <= 20 ms: {}",
        met(per_sec >= 10_000.0),
        met(p99 <= 20.0)
    );
    let figures = json!({
        "accepted": out.accepted,
        "accepted_per_s": round3(per_sec),
        "elapsed_s": round3(secs),
        "ack": summary(&out.ack),
        "duplicates": out.duplicates,
        "errors": errors,
        "error_status": out.other_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "transport_errors": out.transport_errors,
        "first_error": out.first_error,
        "stored_rows": stored,
        "cpu_during_load": out.cpu,
        "body_bytes_mean": round3(body_bytes as f64 / a.webhooks as f64),
        "processed_during_load": processed_during,
        "passes_during_load": passes_during,
        "drained": drained,
        "drain_s": round3(drain_secs),
        "pending_after_drain": pending_left,
        "processor_rows_settled": settled_rows,
        "processor_rows_per_s": round3(settled_rows as f64 / settle_secs),
        "daemon_webhook_stats": after,
        "passes": passes,
        "simulators": sims,
    });
    let targets = json!({
        "accepted_per_s": { "target": ">= 10000", "met": per_sec >= 10_000.0 },
        "ack_p99_ms": { "target": "<= 20", "met": p99 <= 20.0 },
    });
    h.shutdown().await;
    Ok(json!({
        "scenario": "ingest",
        "parameters": with_common(cli, serde_json::to_value(a)?),
        "figures": figures,
        "targets": targets,
    }))
}

fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64().max(1e-9)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn with_common(cli: &Cli, mut params: Value) -> Value {
    if let Some(o) = params.as_object_mut() {
        o.insert("seed".into(), cli.seed.into());
        o.insert("config_overrides".into(), json!(cli.overrides));
        o.insert(
            "social_batch_budget_per_hour".into(),
            cli.social_batch_budget.into(),
        );
        o.insert(
            "coalesce_ms".into(),
            cli.coalesce_ms
                .map_or_else(|| json!("config default (50)"), Value::from),
        );
    }
    params
}

// ---- propagation -------------------------------------------------------------------------

/// One source change being watched.
struct Change {
    sku: String,
    kind: &'static str,
    at: Instant,
    want: Vec<Want>,
    arrived: Vec<Option<Duration>>,
}

/// What the propagation watcher saw, once every change arrived or passed the bound.
struct Watched {
    /// Arrived changes: until the last target showed each.
    overall: Histogram<u64>,
    /// Every change, the ones not arrived counted as bound + 1 ms.
    censored: Histogram<u64>,
    /// Per target (in [`Harness::targets`] order), each change that target showed, whether
    /// or not the others did in time.
    per_target: Vec<Histogram<u64>>,
    /// Changes every target showed within the bound.
    arrived: u64,
    /// Changes some target did not show within the bound.
    never: u64,
    /// Per target, the changes it did not show within the bound.
    missed_by_target: Vec<u64>,
    /// The same split by kind of change.
    by_kind: BTreeMap<&'static str, KindLatency>,
    /// Up to ten changes that did not arrive.
    missed: Vec<Value>,
    /// The longest scan of the open changes.
    scan_max: Duration,
}

/// The watcher's figures for one kind of change (`Change::kind`), indexed like the targets.
#[derive(Clone)]
struct KindLatency {
    /// Latency to each target of the changes that target showed (the values
    /// `per_target` records).
    per_target: Vec<Histogram<u64>>,
    /// Changes not shown by each target within the bound (as `missed_by_target`).
    missed_by_target: Vec<u64>,
}

impl KindLatency {
    fn new(targets: usize) -> Result<Self> {
        Ok(Self {
            per_target: (0..targets).map(|_| histogram()).collect::<Result<_>>()?,
            missed_by_target: vec![0; targets],
        })
    }

    /// `{target id: summary + "missed"}` for the JSON result.
    fn to_json(&self, target_ids: &[String]) -> Value {
        let by_target: serde_json::Map<String, Value> = target_ids
            .iter()
            .zip(&self.per_target)
            .zip(&self.missed_by_target)
            .map(|((id, h), &missed)| {
                let mut s = summary(h);
                if let Some(o) = s.as_object_mut() {
                    o.insert("missed".into(), missed.into());
                }
                (id.clone(), s)
            })
            .collect();
        Value::Object(by_target)
    }

    /// `webshop p99 143.0 ms, social p99 4.8 s (2 not arrived)` for the human summary.
    fn brief(&self, target_ids: &[String]) -> String {
        target_ids
            .iter()
            .zip(&self.per_target)
            .zip(&self.missed_by_target)
            .map(|((id, h), &missed)| {
                let p99 = if h.is_empty() {
                    "no samples".to_string()
                } else {
                    format!("p99 {}", short_latency(h.value_at_quantile(0.99)))
                };
                if missed > 0 {
                    format!("{id} {p99} ({missed} not arrived)")
                } else {
                    format!("{id} {p99}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A latency in microseconds for a short summary line: `143.0 ms`, `4.8 s`.
fn short_latency(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1_000_000.0)
    } else {
        format!("{:.1} ms", ms(us))
    }
}

/// Picks a change of `erp` that moves what every target should show, applies nothing.
/// Price: ±10–30 % (under the webshop's 60 % guard), whole NOK. Stock: a new quantity
/// 3–52 in the central warehouse (the location every target counts; the marketplace shows
/// it minus 2, capped at 50). `None` if 20 candidates all left some target unchanged.
fn pick_change(
    rng: &mut Rng,
    config: &Config,
    targets: &[Target],
    erp: &SimRecord,
    now: OffsetDateTime,
    changes: Changes,
) -> Result<Option<(SimRecord, Vec<Want>, &'static str)>> {
    let old: Vec<Want> = targets
        .iter()
        .map(|t| expected(config, t, erp, now))
        .collect::<Result<_>>()?;
    let price_change = match changes {
        Changes::Mixed => rng.below(2) == 0,
        Changes::Price => true,
        Changes::Stock => false,
    };
    for _ in 0..20 {
        let mut new = erp.clone();
        let kind = if price_change {
            let factor = 0.10 + 0.20 * rng.unit();
            let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            let minor =
                (erp.offer.price.minor as f64 * (1.0 + sign * factor) / 100.0).round() as i64 * 100;
            new.offer = Offer::regular(Money::new(minor.max(1000), Currency::NOK));
            "price"
        } else {
            let q = erp.stock.get(CENTRAL_WH).copied().unwrap_or(0);
            let mut n = 3 + rng.below(50) as i64;
            if n == q {
                n = if q < 52 { q + 1 } else { q - 1 };
            }
            new.stock.insert(CENTRAL_WH.to_string(), n);
            "stock"
        };
        let want: Vec<Want> = targets
            .iter()
            .map(|t| expected(config, t, &new, now))
            .collect::<Result<_>>()?;
        if want.iter().zip(&old).all(|(w, o)| w != o) {
            return Ok(Some((new, want, kind)));
        }
    }
    Ok(None)
}

async fn propagation(cli: &Cli, a: &PropagationArgs) -> Result<Value> {
    if !(a.rate > 0.0 && a.seconds > 0.0) {
        bail!("--rate and --seconds must be positive");
    }
    let total = (a.rate * a.seconds).round() as usize;
    if a.skus < total {
        bail!(
            "--skus {} is smaller than rate × seconds = {total}: each SKU changes at most once, so \
             that a later change cannot hide an earlier one; raise --skus",
            a.skus
        );
    }
    let h = Harness::start(cli, a.skus, |_| Ok(())).await?;
    let (checked, mismatched) = check_expectations(&h, a.skus)?;
    progress(format!(
        "expectation check after the first pass: {mismatched} of {checked} (SKU, target) values differ from the computed desired value"
    ));
    if mismatched > 0 {
        progress("WARNING: the expected-value method disagrees with the converged state");
    }
    if !a.cold_offer_ids {
        progress("warm-up: reading every SKU on the marketplace once, to learn the eBay offer ids");
        let skus: Vec<String> = (0..a.skus).map(|i| catalog_item(i).sku).collect();
        let warm = h
            .engine
            .reconcile(&Scope {
                channel: Some("marketplace".into()),
                skus: Some(skus),
                ..Scope::default()
            })
            .await?;
        if !warm.converged() {
            bail!(
                "the warm-up pass did not find the marketplace in sync: {}",
                warm.table()
            );
        }
    }
    if a.channel_webhooks {
        progress(
            "subscribing the daemon to every target's webhooks (writes come back as webhooks)",
        );
        subscribe_daemon(&h);
    }
    let ids = shopify_ids(h.store()).await?;
    let targets = h.targets();
    let target_ids: Vec<String> = targets.iter().map(|t| t.cfg.id.clone()).collect();
    let config = h.config().clone();
    let url = h.webhook_url(WEBSHOP);
    let notice_url = h.webhook_url("erp");
    let client = HttpClient::new(Duration::from_secs(30), None)
        .map_err(|e| anyhow!("building the HTTP client: {e}"))?
        .raw()
        .clone();

    let mut order: Vec<usize> = (0..a.skus).collect();
    let mut rng = Rng(cli.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }

    let pending: Arc<Mutex<Vec<Change>>> = Arc::new(Mutex::new(Vec::new()));
    let producing = Arc::new(AtomicBool::new(true));
    let hint_ack = Arc::new(Mutex::new(histogram()?));
    let hint_errors = Arc::new(AtomicU64::new(0));
    let hint_first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(a.max_in_flight.max(1)));
    let runs_before = last_run_id(h.store()).await?;
    let run = nonce();

    // The watcher: polls the targets' simulators (in process, no HTTP) for every open change.
    let watcher = {
        let (pending, producing, targets) = (pending.clone(), producing.clone(), targets.clone());
        let bound = Duration::from_millis(a.bound_ms);
        let poll = Duration::from_millis(a.poll_ms.max(1));
        tokio::spawn(async move {
            let mut overall = histogram()?;
            // Every change, the ones not arrived counted as bound + 1 ms (censored).
            let mut censored = histogram()?;
            let mut per_target: Vec<Histogram<u64>> =
                targets.iter().map(|_| histogram()).collect::<Result<_>>()?;
            let mut missed_by_target = vec![0u64; targets.len()];
            // The same split by kind of change; an entry appears with a kind's first change.
            let blank = KindLatency::new(targets.len())?;
            let mut by_kind: BTreeMap<&'static str, KindLatency> = BTreeMap::new();
            let mut missed: Vec<Value> = Vec::new();
            let mut open: Vec<Change> = Vec::new();
            let (mut arrived, mut never) = (0u64, 0u64);
            let mut scan_max = Duration::ZERO;
            loop {
                let done_producing = !producing.load(Ordering::Acquire);
                open.append(&mut pending.lock().unwrap_or_else(|p| p.into_inner()));
                let now = Instant::now();
                open.retain_mut(|c| {
                    // A target's latency counts when it shows the change, whether or not
                    // the others do in time.
                    let of_kind = by_kind.entry(c.kind).or_insert_with(|| blank.clone());
                    for (k, t) in targets.iter().enumerate() {
                        if c.arrived[k].is_none() && shows(t, &c.sku, &c.want[k]) {
                            let d = now.duration_since(c.at);
                            c.arrived[k] = Some(d);
                            record(&mut per_target[k], d);
                            record(&mut of_kind.per_target[k], d);
                        }
                    }
                    if c.arrived.iter().all(Option::is_some) {
                        let last = c
                            .arrived
                            .iter()
                            .flatten()
                            .max()
                            .copied()
                            .unwrap_or_default();
                        record(&mut overall, last);
                        record(&mut censored, last);
                        arrived += 1;
                        return false;
                    }
                    if now.duration_since(c.at) > bound {
                        never += 1;
                        record(&mut censored, bound + Duration::from_millis(1));
                        for (k, d) in c.arrived.iter().enumerate() {
                            if d.is_none() {
                                missed_by_target[k] += 1;
                                of_kind.missed_by_target[k] += 1;
                            }
                        }
                        if missed.len() < 10 {
                            missed.push(json!({"sku": c.sku, "kind": c.kind}));
                        }
                        return false;
                    }
                    true
                });
                if done_producing && open.is_empty() {
                    break;
                }
                // The watcher shares the CPU with the daemon it measures: with many changes
                // open (a budget-paced channel), a scan every `poll` would take a core of
                // its own. It keeps to about a fifth of one core; the resolution coarsens
                // instead (reported as `watch_scan_max_ms`).
                let scan = now.elapsed();
                scan_max = scan_max.max(scan);
                tokio::time::sleep(poll.max(scan * 4)).await;
            }
            anyhow::Ok(Watched {
                overall,
                censored,
                per_target,
                arrived,
                never,
                missed_by_target,
                by_kind,
                missed,
                scan_max,
            })
        })
    };

    progress(format!(
        "making {total} source changes at {} per second, each followed by a signed hint",
        a.rate
    ));
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let (mut made, mut skipped) = (0usize, 0usize);
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut posts = tokio::task::JoinSet::new();
    let mut last_change = start;
    for (i, idx) in order.iter().take(total).enumerate() {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let sku = catalog_item(*idx).sku;
        let erp = h
            .world
            .tryton
            .record(&sku)
            .with_context(|| format!("{sku} is not in the ERP"))?;
        let now = OffsetDateTime::now_utc();
        let Some((new, want, kind)) =
            pick_change(&mut rng, &config, &targets, &erp, now, a.changes)?
        else {
            skipped += 1;
            continue;
        };
        let ok = match kind {
            "price" => h.world.tryton.set_offer(&sku, new.offer),
            _ => h.world.tryton.set_stock(
                &sku,
                CENTRAL_WH,
                new.stock.get(CENTRAL_WH).copied().unwrap_or(0),
            ),
        };
        if !ok {
            skipped += 1;
            continue;
        }
        let at = Instant::now();
        last_change = at;
        made += 1;
        *kinds.entry(kind).or_default() += 1;
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Change {
                sku: sku.clone(),
                kind,
                at,
                arrived: vec![None; want.len()],
                want,
            });
        // The hint: Tryton sends no webhooks, so the change is announced by a signed change
        // notice (as a trigger next to the ERP would), or the way a webshop edit would be.
        let event_id = format!("hint-{run:x}-{i}");
        let (body, headers, url) = match a.hint {
            Hint::Notice => {
                let body = format!(r#"{{"skus":["{sku}"]}}"#);
                let headers = vec![
                    (
                        omnisync_sdk::notice::SIGNATURE_HEADER,
                        omnisync_sdk::notice::ChangeNotice::sign(
                            omnisync::demo::DEMO_NOTIFY_SECRET.as_bytes(),
                            body.as_bytes(),
                        ),
                    ),
                    (omnisync_sdk::notice::EVENT_ID_HEADER, event_id),
                ];
                (body, headers, notice_url.clone())
            }
            Hint::Webshop => {
                let body = products_update_body(&sku, ids.get(&sku).copied().unwrap_or((0, 0, 0)));
                let headers = shopify_headers("products/update", &event_id, body.as_bytes());
                (body, headers, url.clone())
            }
        };
        let (client, sem) = (client.clone(), in_flight.clone());
        let (ack, errors, first) = (
            hint_ack.clone(),
            hint_errors.clone(),
            hint_first_error.clone(),
        );
        posts.spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let mut req = client.post(url.as_str()).body(body);
            for (k, v) in &headers {
                req = req.header(*k, v.as_str());
            }
            let t = Instant::now();
            let result = req.send().await;
            let took = t.elapsed();
            let failure = match result {
                Ok(r) if r.status().as_u16() == 200 => None,
                Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Some(e.to_string()),
            };
            record(&mut ack.lock().unwrap_or_else(|p| p.into_inner()), took);
            if let Some(f) = failure {
                errors.fetch_add(1, Ordering::Relaxed);
                first
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(f);
            }
        });
        // Reap finished POSTs as we go (bounded memory).
        while posts.try_join_next().is_some() {}
    }
    let changing_secs = last_change.duration_since(start).as_secs_f64();
    producing.store(false, Ordering::Release);
    progress(format!(
        "{made} changes made in {changing_secs:.2} s; waiting (at most {} ms each) for the targets",
        a.bound_ms
    ));
    while posts.join_next().await.is_some() {}
    let w = watcher.await.context("the watcher panicked")??;
    let after = h.daemon.webhook_stats().snapshot();
    let passes = pass_stats(h.store(), runs_before).await?;
    let sims = h.sim_stats();
    let pending_after = inbox_count(h.store(), "pending").await?;
    settle(&h, Duration::from_secs(15)).await?;
    let final_pass = h.engine.reconcile(&Scope::default()).await?;
    let converged = final_pass.converged();

    let achieved_rate = if changing_secs > 0.0 {
        (made.saturating_sub(1)) as f64 / changing_secs
    } else {
        0.0
    };
    // The p99 over every change made: above the bound when more than 1 % never arrived.
    let p99 = ms(w.censored.value_at_quantile(0.99));
    let p99_text = if p99 > a.bound_ms as f64 {
        format!(
            "> {} ms (more than 1 % not arrived within the bound)",
            a.bound_ms
        )
    } else {
        format!("{p99:.1} ms")
    };
    let at_rate = (a.rate - 500.0).abs() < 1e-9;
    let target_met =
        at_rate.then_some(p99 <= 250.0 && w.never == 0 && achieved_rate >= 0.95 * a.rate);
    let hint_ack = hint_ack.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let hint_errors = hint_errors.load(Ordering::Relaxed);
    println!(
        "== propagation: {made} source changes ({kinds:?}) at {achieved_rate:.0}/s over {changing_secs:.1} s, {} SKUs",
        a.skus
    );
    println!(
        "source change -> every target shows it (arrived changes): {}",
        brief(&w.overall)
    );
    println!("p99 over all {made} changes: {p99_text}");
    for (k, id) in target_ids.iter().enumerate() {
        println!("  {id:<12} {}", brief(&w.per_target[k]));
    }
    // The same split by kind of change (a price can be paced by a budget that stock is not).
    if w.by_kind.len() > 1 {
        for (kind, of_kind) in &w.by_kind {
            println!("  {kind:>6}: {}", of_kind.brief(&target_ids));
        }
    }
    println!(
        "not arrived within {} ms: {} (by target: {:?})",
        a.bound_ms,
        w.never,
        target_ids
            .iter()
            .zip(&w.missed_by_target)
            .collect::<Vec<_>>()
    );
    println!("hint POST ack: {}; errors {hint_errors}", brief(&hint_ack));
    println!(
        "scoped passes: {} ({} SKUs each on average); final full pass converged: {converged}",
        passes["scoped_passes"], passes["skus_per_scoped_pass_mean"]
    );
    println!(
        "target: p99 <= 250 ms at 500 changes/s: {}",
        target_met.map_or("n/a (the target is stated at --rate 500)", met)
    );
    let figures = json!({
        "changes": made,
        "changes_by_kind": kinds,
        "skipped_candidates": skipped,
        "achieved_rate_per_s": round3(achieved_rate),
        "changing_s": round3(changing_secs),
        "arrived": w.arrived,
        "not_arrived_within_bound": w.never,
        "watch_scan_max_ms": round3(w.scan_max.as_secs_f64() * 1000.0),
        "not_arrived_by_target": target_ids.iter().cloned().zip(w.missed_by_target.iter().copied()).collect::<BTreeMap<_, _>>(),
        "not_arrived_examples": w.missed,
        "latency_all_targets": summary(&w.overall),
        "latency_all_changes_censored": summary(&w.censored),
        "p99_all_changes_ms": if p99 > a.bound_ms as f64 { json!(format!("> {}", a.bound_ms)) } else { json!(p99) },
        "latency_by_target": target_ids.iter().cloned().zip(w.per_target.iter().map(summary)).collect::<BTreeMap<_, _>>(),
        "by_kind": w.by_kind.iter().map(|(kind, of_kind)| (*kind, of_kind.to_json(&target_ids))).collect::<BTreeMap<_, _>>(),
        "hint_ack": summary(&hint_ack),
        "hint_errors": hint_errors,
        "hint_first_error": hint_first_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "expectation_check": { "checked": checked, "mismatched": mismatched },
        "inbox_pending_when_watch_ended": pending_after,
        "final_full_pass_converged": converged,
        "daemon_webhook_stats": after,
        "passes": passes,
        "simulators": sims,
    });
    let targets_json = json!({
        "latency_p99_ms_at_500_per_s": {
            "target": "<= 250",
            "met": target_met,
        },
    });
    h.shutdown().await;
    Ok(json!({
        "scenario": "propagation",
        "parameters": with_common(cli, serde_json::to_value(a)?),
        "figures": figures,
        "targets": targets_json,
    }))
}

// ---- oversell ----------------------------------------------------------------------------

/// A channel buyers buy in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Channel {
    /// Shopify: `sell` lowers a location and sends `orders/create`.
    Webshop,
    /// Meta: `sell` lowers the quantity and sends an order change.
    Social,
    /// eBay: `sell` lowers the quantity and sends a signed `ORDER_CONFIRMATION`.
    Marketplace,
}

const CHANNELS: [Channel; 3] = [Channel::Webshop, Channel::Social, Channel::Marketplace];

impl Channel {
    fn id(self) -> &'static str {
        match self {
            Channel::Webshop => WEBSHOP,
            Channel::Social => SOCIAL,
            Channel::Marketplace => "marketplace",
        }
    }
}

/// The simulators buyers buy in.
#[derive(Clone)]
struct Shops {
    shopify: Arc<omnisync_shopify::sim::Simulator>,
    meta: Arc<omnisync_meta::sim::Simulator>,
    ebay: Arc<omnisync_ebay::sim::Simulator>,
}

impl Shops {
    /// Units the channel offers for `sku` now.
    fn shown(&self, c: Channel, sku: &str) -> i64 {
        let r = match c {
            Channel::Webshop => self.shopify.record(sku),
            Channel::Social => self.meta.record(sku),
            Channel::Marketplace => self.ebay.record(sku),
        };
        r.map_or(0, |r| r.stock.values().copied().filter(|q| *q > 0).sum())
    }

    /// One customer buys one unit; `false` when the channel refuses (shows none).
    fn sell(&self, c: Channel, sku: &str) -> bool {
        match c {
            Channel::Webshop => self.shopify.sell(sku, 1),
            Channel::Social => self.meta.sell(sku, 1),
            Channel::Marketplace => self.ebay.sell(sku, 1),
        }
    }
}

/// One item of the scenario.
struct Item {
    sku: String,
    stock: i64,
    channels: Vec<Channel>,
}

/// Subscribes the daemon to the webhooks of the webshop, the social catalog and the
/// marketplace simulators (every topic).
fn subscribe_daemon(h: &Harness) {
    h.world
        .shopify
        .subscribe(h.webhook_url(WEBSHOP), Vec::new());
    h.world.meta.subscribe(h.webhook_url(SOCIAL), Vec::new());
    h.world
        .ebay
        .subscribe(h.webhook_url("marketplace"), Vec::new());
}

async fn oversell(cli: &Cli, a: &OversellArgs) -> Result<Value> {
    if a.items == 0 || a.channels.lo == 0 || a.channels.hi > 3 {
        bail!("--items must be at least 1 and --channels within 1..3");
    }
    let no_buffers = a.no_buffers;
    let h = Harness::start(cli, a.items, move |doc| {
        if no_buffers {
            let connectors = sub_table(doc, "connectors")?;
            for id in ["marketplace", SOCIAL] {
                sub_table(connectors, id)?.insert("safety_buffer".into(), 0.into());
            }
        }
        Ok(())
    })
    .await?;
    let items: Vec<Item> = (0..a.items)
        .map(|i| Item {
            sku: catalog_item(i).sku,
            stock: i64::from(a.stock.pick(i)),
            channels: CHANNELS[..a.channels.pick(i) as usize].to_vec(),
        })
        .collect();

    // The source: every unit in the central warehouse; then one pass puts it everywhere.
    for it in &items {
        for (_, code) in LOCATIONS {
            let q = if code == CENTRAL_WH { it.stock } else { 0 };
            if !h.world.tryton.set_stock(&it.sku, code, q) {
                bail!("the ERP does not know {}", it.sku);
            }
        }
    }
    let skus: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
    let targets = h.targets();
    let mut in_sync = false;
    for _ in 0..5 {
        h.engine
            .reconcile(&Scope {
                skus: Some(skus.clone()),
                ..Scope::default()
            })
            .await?;
        let now = OffsetDateTime::now_utc();
        let mut all = true;
        for it in &items {
            let erp = h
                .world
                .tryton
                .record(&it.sku)
                .context("the ERP lost an item")?;
            for t in &targets {
                all &= shows(t, &it.sku, &expected(h.config(), t, &erp, now)?);
            }
        }
        if all {
            in_sync = true;
            break;
        }
    }
    if !in_sync {
        bail!("the targets did not reach the new source stock after 5 passes");
    }

    // Now the daemon hears every change and order in the webshop, the social catalog and
    // the marketplace.
    subscribe_daemon(&h);
    let shops = Shops {
        shopify: h.world.shopify.clone(),
        meta: h.world.meta.clone(),
        ebay: h.world.ebay.clone(),
    };
    let shown_at_start: Vec<Vec<i64>> = items
        .iter()
        .map(|it| CHANNELS.iter().map(|c| shops.shown(*c, &it.sku)).collect())
        .collect();
    let source_units: i64 = items.iter().map(|i| i.stock).sum();
    // If every unit shown sold at the same instant (no daemon could act in between).
    let exposure: i64 = items
        .iter()
        .zip(&shown_at_start)
        .map(|(it, shown)| {
            let offered: i64 = it.channels.iter().map(|c| shown[*c as usize]).sum();
            (offered - it.stock).max(0)
        })
        .sum();
    // If each selling channel that shows a unit sells one at the same instant.
    let one_each: i64 = items
        .iter()
        .zip(&shown_at_start)
        .map(|(it, shown)| {
            let sellers = it
                .channels
                .iter()
                .filter(|c| shown[**c as usize] > 0)
                .count() as i64;
            (sellers - it.stock).max(0)
        })
        .sum();
    let floor = if a.gap_ms == 0 { exposure } else { one_each };

    let runs_before = last_run_id(h.store()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    // The monitor: counts every time a channel's quantity goes up (a push back up).
    let monitor = {
        let (shops, stop) = (shops.clone(), stop.clone());
        let watched: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
        let mut last: Vec<Vec<i64>> = shown_at_start.clone();
        tokio::spawn(async move {
            let mut ups: BTreeMap<Channel, (u64, i64)> = BTreeMap::new();
            while !stop.load(Ordering::Acquire) {
                for (i, sku) in watched.iter().enumerate() {
                    for c in CHANNELS {
                        let q = shops.shown(c, sku);
                        let before = &mut last[i][c as usize];
                        if q > *before {
                            let e = ups.entry(c).or_default();
                            e.0 += 1;
                            e.1 += q - *before;
                        }
                        *before = q;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ups
        })
    };

    progress(format!(
        "{} items, {source_units} units at the source, {} buyers start at once (gap {} ms, window {} ms)",
        items.len(),
        items.iter().map(|i| i.channels.len()).sum::<usize>(),
        a.gap_ms,
        a.window_ms
    ));
    let t0 = Instant::now() + Duration::from_millis(100);
    let window = Duration::from_millis(a.window_ms);
    let gap = Duration::from_millis(a.gap_ms);
    let retry = Duration::from_millis(a.retry_ms.max(1));
    let mut buyers = tokio::task::JoinSet::new();
    for (i, it) in items.iter().enumerate() {
        for c in it.channels.iter().copied() {
            let (shops, sku) = (shops.clone(), it.sku.clone());
            buyers.spawn(async move {
                tokio::time::sleep_until(t0).await;
                let mut sold = 0i64;
                // Bounded: the window, and 100 units per buyer.
                while Instant::now() < t0 + window && sold < 100 {
                    if shops.sell(c, &sku) {
                        sold += 1;
                        if gap.is_zero() {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(gap).await;
                        }
                    } else {
                        tokio::time::sleep(retry).await;
                    }
                }
                (i, c, sold)
            });
        }
    }
    let mut sold: Vec<[i64; 3]> = vec![[0; 3]; items.len()];
    while let Some(joined) = buyers.join_next().await {
        let (i, c, n) = joined.context("a buyer panicked")?;
        sold[i][c as usize] += n;
    }
    progress("buyers done; waiting for webhooks, the inbox and the outbox to settle");
    let settled = settle(&h, Duration::from_secs(60)).await?;
    stop.store(true, Ordering::Release);
    let ups = monitor.await.context("the monitor panicked")?;

    let shown_at_end: Vec<Vec<i64>> = items
        .iter()
        .map(|it| CHANNELS.iter().map(|c| shops.shown(*c, &it.sku)).collect())
        .collect();
    let mut oversold = 0i64;
    let mut oversold_items = 0u64;
    let mut sold_by_channel: BTreeMap<Channel, i64> = BTreeMap::new();
    let mut classes: BTreeMap<String, Value> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        let total: i64 = sold[i].iter().sum();
        let over = (total - it.stock).max(0);
        oversold += over;
        oversold_items += u64::from(over > 0);
        for c in CHANNELS {
            *sold_by_channel.entry(c).or_default() += sold[i][c as usize];
        }
        let key = format!("channels={} stock={}", it.channels.len(), it.stock);
        let e = classes.entry(key).or_insert_with(|| {
            json!({"items": 0, "source_units": 0, "sold": {}, "oversold": 0,
                   "shown_at_start": {}, "shown_at_end": {}})
        });
        let add = |v: &mut Value, n: i64| *v = json!(v.as_i64().unwrap_or(0) + n);
        add(&mut e["items"], 1);
        add(&mut e["source_units"], it.stock);
        add(&mut e["oversold"], over);
        for c in CHANNELS {
            add(&mut e["sold"][c.id()], sold[i][c as usize]);
            add(
                &mut e["shown_at_start"][c.id()],
                shown_at_start[i][c as usize],
            );
            add(&mut e["shown_at_end"][c.id()], shown_at_end[i][c as usize]);
        }
    }
    let total_sold: i64 = sold_by_channel.values().sum();
    let open = h.store().open_reservations(Some(&skus)).await?.len();
    let after = h.daemon.webhook_stats().snapshot();
    let passes = pass_stats(h.store(), runs_before).await?;
    let sims = h.sim_stats();
    let shop_hooks = h.world.shopify.webhook_stats();
    let meta_hooks = h.world.meta.webhook_stats();
    let ups_json: BTreeMap<&str, Value> = ups
        .iter()
        .map(|(c, (n, units))| (c.id(), json!({"times": n, "units": units})))
        .collect();

    println!(
        "== oversell: {} items, {source_units} units at the source, channels {}, stock {}, gap {} ms, window {} ms{}",
        items.len(),
        a.channels,
        a.stock,
        a.gap_ms,
        a.window_ms,
        if a.no_buffers {
            ", safety buffers 0"
        } else {
            ", demo safety buffers (marketplace 2, social 1)"
        }
    );
    println!("sold: {total_sold} units {sold_by_channel:?}");
    println!(
        "OVERSOLD: {oversold} units on {oversold_items} items (target 0: {})",
        met(oversold == 0)
    );
    println!(
        "bounds: {exposure} units shown beyond stock at the start (every shown unit sold at once); \
         {one_each} if each selling channel sells one unit at the same instant; floor for this run: {floor}"
    );
    println!("quantities pushed back up during the run: {ups_json:?}");
    println!("open reservations after: {open}; settled: {settled}");
    for (k, v) in &classes {
        println!("  {k}: {v}");
    }
    let figures = json!({
        "oversold_units": oversold,
        "oversold_items": oversold_items,
        "source_units": source_units,
        "sold_units": total_sold,
        "sold_by_channel": sold_by_channel,
        "exposure_units_at_start": exposure,
        "one_each_at_once_units": one_each,
        "floor_units": floor,
        "pushed_up": ups_json,
        "by_class": classes,
        "open_reservations_after": open,
        "settled": settled,
        "daemon_webhook_stats": after,
        "simulator_webhooks": { WEBSHOP: shop_hooks, SOCIAL: meta_hooks },
        "passes": passes,
        "simulators": sims,
    });
    let targets_json = json!({
        "oversold_units": { "target": "0", "met": oversold == 0 },
    });
    h.shutdown().await;
    Ok(json!({
        "scenario": "oversell",
        "parameters": with_common(cli, serde_json::to_value(a)?),
        "figures": figures,
        "targets": targets_json,
    }))
}

// ---- main --------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // Logs only when asked for: formatting them would cost the daemon time otherwise.
    if std::env::var_os("RUST_LOG").is_some() {
        omnisync::telemetry::init("human");
    }
    let mut out = match &cli.scenario {
        Scenario::Ingest(a) => ingest(&cli, a).await?,
        Scenario::Propagation(a) => propagation(&cli, a).await?,
        Scenario::Oversell(a) => oversell(&cli, a).await?,
    };
    if let Some(o) = out.as_object_mut() {
        o.insert("machine".into(), machine());
        o.insert("taken_at".into(), now_rfc3339().into());
        o.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    if cli.json {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
