//! `omnisync demo` and `omnisync sim`: the four simulators on loopback, a generated config
//! that points the daemon at them, a seeded catalog, deliberate drift of every kind, and
//! the real engine converging it.
//!
//! The demo goes through exactly what `omnisync run` uses: the config is written to a file
//! and loaded with [`Config::load`], the connectors are the real adapters speaking HTTP to
//! the simulators, and every pass is [`Engine::reconcile`] on an SQLite file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use omnisync_sdk::sim::{Fault, SimControl, SimRecord, SimServer};
use omnisync_sdk::{Currency, Money, Offer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, ConnectorConfig};
use crate::engine::{Engine, Scope};
use crate::planner::price::desired_offer;
use crate::report::RunReport;
use crate::store::Store;

/// Canonical locations of the demo retailer, with the ERP (Tryton) location ids.
pub const LOCATIONS: [(&str, &str); 3] = [
    ("oslo-store", "3"),
    ("bergen-store", "7"),
    ("central-wh", "11"),
];

/// The secret the demo ERP's change notices are signed with (`notify_secret`): a script or
/// a database trigger next to the ERP posts them, since Tryton sends no webhooks.
pub const DEMO_NOTIFY_SECRET: &str = "demo-erp-notify-secret";

/// Product families; the SKU prefix decides which promotion applies.
const FAMILIES: [(&str, &str); 4] = [
    ("JKT", "Rain jacket"),
    ("TEE", "Merino tee"),
    ("SHO", "Trail shoe"),
    ("CAP", "Wool cap"),
];

/// The running simulators.
pub struct World {
    /// The ERP.
    pub tryton: Arc<omnisync_tryton::sim::Simulator>,
    /// The webshop.
    pub shopify: Arc<omnisync_shopify::sim::Simulator>,
    /// The marketplace.
    pub ebay: Arc<omnisync_ebay::sim::Simulator>,
    /// The social catalog.
    pub meta: Arc<omnisync_meta::sim::Simulator>,
    servers: Vec<(&'static str, SimServer)>,
    settings: BTreeMap<&'static str, toml::Value>,
}

/// What can be changed about the simulated world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// `items_batch` calls the social catalog (Meta) admits per rolling hour: its Business
    /// Use Case budget, whose real formula is unconfirmed (the simulator's default, 200).
    pub social_batch_calls_per_hour: u64,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            social_batch_calls_per_hour: omnisync_meta::sim::SimOptions::default()
                .catalog_batch_calls,
        }
    }
}

impl World {
    /// Starts the four simulators. `base_port` 0 picks free ports; otherwise they listen on
    /// `base_port`, `+1`, `+2`, `+3` (ERP, webshop, marketplace, social).
    pub async fn start(base_port: u16) -> anyhow::Result<World> {
        World::start_with(base_port, &WorldOptions::default()).await
    }

    /// Like [`World::start`], with these options.
    pub async fn start_with(base_port: u16, options: &WorldOptions) -> anyhow::Result<World> {
        let addr = |i: u16| -> SocketAddr {
            let port = if base_port == 0 { 0 } else { base_port + i };
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let mut settings = BTreeMap::new();
        let mut servers = Vec::new();

        let opts = omnisync_tryton::sim::SimOptions::default();
        let (tryton, srv) = omnisync_tryton::sim::start(addr(0), opts.clone())
            .await
            .context("starting the Tryton simulator")?;
        // A Tryton server next to the daemon: the demo lets the adapter make 200 JSON-RPC
        // calls/s (its default of 20/s is polite to a shared server, and makes each
        // webhook pass wait for the budget; see BENCHMARKS.md).
        let mut erp = opts.settings(&srv.base_url());
        erp.requests_per_second = 200;
        erp.burst = 50;
        settings.insert("erp", toml::Value::try_from(erp)?);
        servers.push(("erp (tryton)", srv));

        // A Shopify Plus shop: cost bucket restoring 1,000 points/s (Standard restores 100,
        // which makes thousands of corrections take minutes: the simulator's default).
        let opts = omnisync_shopify::sim::SimOptions {
            restore_rate: 1000.0,
            bucket_size: 10_000.0,
            ..Default::default()
        };
        let (shopify, srv) = omnisync_shopify::sim::start(addr(1), opts.clone())
            .await
            .context("starting the Shopify simulator")?;
        settings.insert(
            "webshop",
            toml::Value::try_from(opts.settings(&srv.base_url()))?,
        );
        servers.push(("webshop (shopify)", srv));

        // eBay documents daily quotas, no per-second limit; the demo's simulated account
        // allows 500 calls/s (the simulator's default is 50).
        let opts = omnisync_ebay::sim::SimOptions {
            requests_per_second: Some(500),
            ..Default::default()
        };
        let (ebay, srv) = omnisync_ebay::sim::start(addr(2), opts.clone())
            .await
            .context("starting the eBay simulator")?;
        // Notifications on: eBay hashes the registered endpoint into its validation
        // challenge only, so the demo names the daemon's default address.
        settings.insert(
            "marketplace",
            toml::Value::try_from(opts.webhook_settings(
                &srv.base_url(),
                "http://127.0.0.1:8080/webhooks/marketplace",
                omnisync_ebay::sim::DEMO_VERIFICATION_TOKEN,
            ))?,
        );
        servers.push(("marketplace (ebay)", srv));

        let opts = omnisync_meta::sim::SimOptions {
            catalog_batch_calls: options.social_batch_calls_per_hour,
            ..Default::default()
        };
        let (meta, srv) = omnisync_meta::sim::start(addr(3), opts.clone())
            .await
            .context("starting the Meta simulator")?;
        settings.insert(
            "social",
            toml::Value::try_from(opts.settings(&srv.base_url()))?,
        );
        servers.push(("social (meta)", srv));

        Ok(World {
            tryton,
            shopify,
            ebay,
            meta,
            servers,
            settings,
        })
    }

    /// Where each simulator listens.
    pub fn urls(&self) -> Vec<(&'static str, String)> {
        self.servers
            .iter()
            .map(|(n, s)| (*n, s.base_url()))
            .collect()
    }

    /// A complete daemon config for these simulators, as TOML.
    pub fn config_toml(&self, database: &str, now: OffsetDateTime) -> anyhow::Result<String> {
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let locations = |codes: [&str; 3]| {
            let mut t = toml::Table::new();
            for ((canon, _), code) in LOCATIONS.iter().zip(codes) {
                t.insert((*canon).into(), toml::Value::String(code.into()));
            }
            toml::Value::Table(t)
        };
        let mut doc: toml::Table = toml::from_str(&format!(
            r#"
[daemon]
database = "{database}"
reconcile_schedule = "*/5 * * * *"

[daemon.outbox]
min_delay_ms = 50
max_delay_ms = 2000

[canonical]
currency = "NOK"
prices_include_vat = false

[[fx]]
from = "NOK"
to = "EUR"
rate = "0.0857"
date = "2026-01-01"

[[fx]]
from = "NOK"
to = "SEK"
rate = "0.9412"
date = "2026-01-01"

[[promotions]]
name = "black-week"
sku_prefix = "JKT-"
percent_off = "20"
from = "{bw_from}"
to = "{bw_to}"

[[promotions]]
name = "christmas"
sku_prefix = "TEE-"
percent_off = "15"
from = "{xmas_from}"
to = "{xmas_to}"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
schedule = "*/10 * * * *"

[connectors.webshop]
kind = "shopify"
price = "target"
stock = "target"
currency = "NOK"
prices_include_vat = true
vat_percent = "25"
rounding = "x.90"
max_price_change_percent = "60"

[connectors.marketplace]
kind = "ebay"
price = "target"
stock = "target"
currency = "EUR"
prices_include_vat = true
vat_percent = "19"
markup_percent = "12"
rounding = "x.99"
stock_from = ["central-wh"]
safety_buffer = 2
stock_cap = 50

[connectors.social]
kind = "meta"
price = "target"
stock = "target"
currency = "SEK"
prices_include_vat = true
vat_percent = "25"
markup_percent = "5"
rounding = "x9"
stock_from = ["oslo-store", "bergen-store", "central-wh"]
safety_buffer = 1
"#,
            bw_from = fmt(now - time::Duration::hours(1)),
            bw_to = fmt(now + time::Duration::days(7)),
            xmas_from = fmt(now + time::Duration::days(30)),
            xmas_to = fmt(now + time::Duration::days(37)),
        ))?;
        let connectors = doc
            .get_mut("connectors")
            .and_then(|c| c.as_table_mut())
            .context("demo config has no connectors")?;
        let shop_locations = omnisync_shopify::sim::SimOptions::default().locations;
        let shop_codes: Vec<&str> = shop_locations.iter().map(|s| s.as_str()).collect();
        let erp_codes = [LOCATIONS[0].1, LOCATIONS[1].1, LOCATIONS[2].1];
        for (id, table) in connectors.iter_mut() {
            let Some(t) = table.as_table_mut() else {
                continue;
            };
            if let Some(s) = self.settings.get(id.as_str()) {
                t.insert("settings".into(), s.clone());
            }
            match id.as_str() {
                "erp" => {
                    t.insert("locations".into(), locations(erp_codes));
                    t.insert(
                        "notify_secret".into(),
                        format!("literal:{DEMO_NOTIFY_SECRET}").into(),
                    );
                }
                "webshop" if shop_codes.len() >= 3 => {
                    t.insert(
                        "locations".into(),
                        locations([shop_codes[0], shop_codes[1], shop_codes[2]]),
                    );
                }
                _ => {}
            }
        }
        Ok(toml::to_string(&doc)?)
    }

    /// Seeds the ERP with `n` items over three locations, and every target with exactly
    /// what the config's rules derive from it (a consistent starting point).
    pub fn seed_in_sync(
        &self,
        config: &Config,
        n: usize,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let erp: Vec<SimRecord> = (0..n).map(catalog_item).collect();
        self.tryton.seed(erp.clone());
        for c in &config.connectors {
            let sim: &dyn SimControl = match c.kind.as_str() {
                "shopify" => self.shopify.as_ref(),
                "ebay" => self.ebay.as_ref(),
                "meta" => self.meta.as_ref(),
                _ => continue,
            };
            let records = erp
                .iter()
                .map(|item| desired_record(config, c, item, sim.kind(), now))
                .collect::<anyhow::Result<Vec<_>>>()?;
            sim.seed(records);
        }
        Ok(())
    }

    /// Injects drift of every kind, deterministically from the SKU numbers, and queues a
    /// few faults. Returns a description of what was done, one line per kind.
    pub fn inject_drift(&self, n: usize) -> Vec<String> {
        let mut done = Vec::new();
        let pick = |every: usize, offset: usize| (offset..n).step_by(every.max(1));
        let sku = |i: usize| catalog_item(i).sku;

        // The ERP moves: price changes and store sales.
        let mut count = 0;
        for i in pick(97, 3) {
            let item = catalog_item(i);
            let new = Money::new(item.offer.price.minor + 5000, Currency::NOK);
            count += usize::from(self.tryton.set_offer(&item.sku, Offer::regular(new)));
        }
        done.push(format!(
            "erp: {count} prices raised by 50.00 NOK (source_changed everywhere)"
        ));
        let mut count = 0;
        for i in pick(31, 5) {
            let item = catalog_item(i);
            let q = item.stock.get(LOCATIONS[0].1).copied().unwrap_or(0);
            count += usize::from(
                self.tryton
                    .set_stock(&item.sku, LOCATIONS[0].1, (q - 1).max(0)),
            );
        }
        done.push(format!("erp: {count} units sold in the Oslo store"));
        let mut count = 0;
        for i in pick(53, 7) {
            let item = catalog_item(i);
            let q = item.stock.get(LOCATIONS[2].1).copied().unwrap_or(0);
            count += usize::from(
                self.tryton
                    .set_stock(&item.sku, LOCATIONS[2].1, (q - 4).max(0)),
            );
        }
        done.push(format!("erp: {count} central-warehouse picks the marketplace has not seen (stale marketplace stock)"));

        // Channels edited by hand.
        let mut count = 0;
        for i in pick(47, 11) {
            if let Some(r) = self.shopify.record(&sku(i)) {
                let edited = Offer::regular(Money::new(
                    r.offer.price.minor - 1000,
                    r.offer.price.currency,
                ));
                count += usize::from(self.shopify.set_offer(&r.sku, edited));
            }
        }
        done.push(format!(
            "webshop: {count} prices edited by hand in the shop admin (channel_edit)"
        ));
        let mut count = 0;
        for i in pick(61, 13) {
            if let Some(r) = self.ebay.record(&sku(i)) {
                let q = r.stock.values().next().copied().unwrap_or(0);
                count += usize::from(self.ebay.set_stock(
                    &r.sku,
                    omnisync_sdk::StockLevel::DEFAULT_LOCATION,
                    q + 5,
                ));
            }
        }
        done.push(format!(
            "marketplace: {count} quantities raised by hand (channel_edit)"
        ));
        let mut count = 0;
        for i in pick(8, 1)
            .filter(|i| catalog_item(*i).sku.starts_with("TEE-"))
            .take(n / 40 + 1)
        {
            if let Some(r) = self.meta.record(&sku(i)) {
                let early = Offer {
                    price: r.offer.price,
                    sale: Some(Money::new(
                        r.offer.price.minor * 85 / 100,
                        r.offer.price.currency,
                    )),
                };
                count += usize::from(self.meta.set_offer(&r.sku, early));
            }
        }
        done.push(format!(
            "social: {count} Christmas sale prices published a month early (sale window)"
        ));
        let mut count = 0;
        for i in pick(211, 17) {
            count += usize::from(self.meta.remove(&sku(i)));
        }
        done.push(format!(
            "social: {count} listings missing from the catalog (will be created)"
        ));
        for k in 1..=3 {
            self.ebay.add(SimRecord {
                sku: format!("LEGACY-{k:03}"),
                title: "Discontinued listing".into(),
                offer: Offer::regular(Money::new(1999, Currency::EUR)),
                stock: BTreeMap::from([(
                    omnisync_sdk::StockLevel::DEFAULT_LOCATION.to_string(),
                    3,
                )]),
            });
        }
        done.push("marketplace: 3 orphan listings with SKUs the ERP does not know (reported, never guessed)".into());

        // Faults: the adapters must retry through these.
        self.ebay.faults().inject(
            Fault::Status {
                status: 429,
                retry_after: Some(1),
            },
            2,
        );
        self.shopify.faults().inject(
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            1,
        );
        self.meta.faults().inject(Fault::MalformedJson, 1);
        self.tryton.faults().inject(
            Fault::Status {
                status: 502,
                retry_after: None,
            },
            1,
        );
        done.push(
            "faults: eBay 429 ×2 (Retry-After 1), Shopify 503, Meta malformed JSON, Tryton 502"
                .into(),
        );
        done
    }

    /// Stops every simulator.
    pub async fn shutdown(self) {
        for (_, s) in self.servers {
            s.shutdown().await;
        }
    }
}

/// Item `i` of the demo catalog, as the ERP holds it (deterministic).
pub fn catalog_item(i: usize) -> SimRecord {
    let (prefix, name) = FAMILIES[i % FAMILIES.len()];
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let price = 9_900 + (h % 400) as i64 * 500; // 99.00 ..= 2094.00 NOK excl. VAT
    let stock = BTreeMap::from([
        (LOCATIONS[0].1.to_string(), (h % 7) as i64),
        (LOCATIONS[1].1.to_string(), ((h >> 3) % 5) as i64),
        (LOCATIONS[2].1.to_string(), ((h >> 6) % 60) as i64),
    ]);
    SimRecord {
        sku: format!("{prefix}-{i:06}"),
        title: format!("{name} #{i}"),
        offer: Offer::regular(Money::new(price, Currency::NOK)),
        stock,
    }
}

/// What a target should show for an ERP item under the config's rules.
fn desired_record(
    config: &Config,
    c: &ConnectorConfig,
    item: &SimRecord,
    kind: &str,
    now: OffsetDateTime,
) -> anyhow::Result<SimRecord> {
    let rules = c
        .price_rules
        .as_ref()
        .context("demo target without price rules")?;
    let sale_field = kind != omnisync_ebay::KIND;
    let offer = desired_offer(
        &item.sku,
        &c.id,
        item.offer.price,
        &config.source_pricing,
        rules,
        &config.fx,
        &config.promotions,
        now,
        sale_field,
    )?;
    let canon: BTreeMap<String, i64> = LOCATIONS
        .iter()
        .map(|(canon, code)| {
            (
                (*canon).to_string(),
                item.stock.get(*code).copied().unwrap_or(0),
            )
        })
        .collect();
    let stock = c
        .stock_rules
        .as_ref()
        .map(|r| r.desired(&canon, &BTreeMap::new()))
        .unwrap_or_default();
    Ok(SimRecord {
        sku: item.sku.clone(),
        title: item.title.clone(),
        offer,
        stock,
    })
}

/// Options of `omnisync demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Catalog size.
    pub skus: usize,
    /// Print the final report as JSON on the last line.
    pub json: bool,
    /// Keep the work directory (config + SQLite) here instead of a temporary one.
    pub dir: Option<PathBuf>,
    /// Most passes before giving up.
    pub max_passes: usize,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The first pass after the drift was injected.
    pub before: RunReport,
    /// The last pass.
    pub after: RunReport,
    /// Passes after the baseline.
    pub passes: usize,
    /// Whether every target reached consistency 1.0.
    pub converged: bool,
}

/// Runs the demo, printing progress to stdout.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    run_and_serve(opts, None).await
}

/// Runs the demo; with `serve`, then keeps the daemon (the web page at `/`, the JSON API
/// under `/api/v1/`, `/healthz`, `/readyz`, the webhooks) and the simulators running on
/// that address until SIGINT or SIGTERM. Prints the URL once the daemon listens. The demo's
/// daemon has no token, so `serve` must be a loopback address.
pub async fn run_and_serve(
    opts: DemoOptions,
    serve: Option<SocketAddr>,
) -> anyhow::Result<DemoOutcome> {
    if let Some(addr) = serve
        && !addr.ip().is_loopback()
    {
        anyhow::bail!(
            "--serve {addr}: the demo serves its page without a token, so only on a loopback address (127.0.0.1:PORT or [::1]:PORT)"
        );
    }
    let started = std::time::Instant::now();
    let tmp;
    let dir: &Path = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path()
        }
    };
    let say = |line: String| {
        if !opts.json {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    let world = World::start(0).await?;
    for (name, url) in world.urls() {
        say(format!("simulator {name:<20} {url}"));
    }
    let db = dir.join("omnisync.db");
    let config_path = dir.join("omnisync.toml");
    let now = OffsetDateTime::now_utc();
    let database = format!("sqlite://{}", db.display());
    std::fs::write(&config_path, world.config_toml(&database, now)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    say(format!("config   {}", config_path.display()));
    say(format!("database {}", db.display()));

    world.seed_in_sync(&config, opts.skus, now)?;
    say(format!(
        "seeded {} items over {} locations in the ERP and all three targets",
        opts.skus,
        LOCATIONS.len()
    ));
    let store = Store::open(&database).await?;
    let engine = Arc::new(Engine::new(config, store)?);
    let baseline = engine.reconcile(&Scope::default()).await?;
    say(format!("baseline pass: {}", summary(&baseline)));

    for line in world.inject_drift(opts.skus) {
        say(format!("drift    {line}"));
    }
    let mut reports = Vec::new();
    let mut converged = false;
    for pass in 1..=opts.max_passes {
        let r = engine.reconcile(&Scope::default()).await?;
        say(format!("pass {pass}: {}", summary(&r)));
        converged = r.converged();
        reports.push(r);
        if converged {
            break;
        }
    }
    let before = reports.first().cloned().unwrap_or_default();
    let after = reports.last().cloned().unwrap_or_default();
    say(String::new());
    say("BEFORE (first pass after the drift):".into());
    say(before.table());
    say("AFTER:".into());
    say(after.table());
    let seconds = started.elapsed().as_secs_f64();
    say(format!(
        "{} after {} passes in {seconds:.1} s ({} items)",
        if converged {
            "CONVERGED: every target channel is consistent"
        } else {
            "NOT CONVERGED"
        },
        reports.len(),
        opts.skus
    ));
    if opts.json {
        println!("{}", serde_json::to_string(&after)?);
    }
    if let Some(addr) = serve {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--serve: cannot listen on {addr}"))?;
        let daemon = crate::daemon::start(engine.clone(), listener)?;
        say(format!(
            "serving the page at http://{0}/ (API http://{0}/api/v1/, /metrics, /healthz, /readyz) until Ctrl-C or SIGTERM",
            daemon.local_addr()
        ));
        crate::daemon::shutdown_signal().await;
        say("stopping".into());
        daemon.shutdown().await;
    }
    world.shutdown().await;
    Ok(DemoOutcome {
        passes: reports.len(),
        before,
        after,
        converged,
    })
}

/// One line per pass: consistency and corrections per target.
pub fn summary(r: &RunReport) -> String {
    r.channels
        .iter()
        .filter(|c| c.role != "source")
        .map(|c| {
            format!(
                "{} {:.4} (drift {}, sent {}, confirmed {}, failed {})",
                c.id,
                c.consistency,
                c.drift.price + c.drift.stock + c.drift.missing,
                c.corrections.sent,
                c.corrections.confirmed,
                c.corrections.failed
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `omnisync sim`: the simulators on fixed ports with a consistent catalog, and a config
/// file for them, until Ctrl-C.
pub async fn serve_simulators(
    base_port: u16,
    skus: usize,
    config_out: &Path,
    database: &str,
) -> anyhow::Result<()> {
    let world = World::start(base_port).await?;
    let now = OffsetDateTime::now_utc();
    std::fs::write(config_out, world.config_toml(database, now)?)
        .with_context(|| format!("writing {}", config_out.display()))?;
    let config = Config::load(config_out).map_err(|e| anyhow::anyhow!("{e}"))?;
    world.seed_in_sync(&config, skus, now)?;
    for (name, url) in world.urls() {
        println!("{name:<20} {url}   (admin: {url}/__sim/records, /__sim/faults, /__sim/stats)");
    }
    println!("config for these simulators: {}", config_out.display());
    println!(
        "try: omnisync reconcile --dry-run --config {}",
        config_out.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    world.shutdown().await;
    Ok(())
}
