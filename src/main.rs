//! The `omnisync` command line: `run`, `check-config`, `reconcile`, `report`, `drift`,
//! `item`, `prune`, `sim`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use omnisync::config::Config;
use omnisync::engine::{Engine, Scope};
use omnisync::report::RunReport;
use omnisync::store::Store;

mod generate;

#[derive(Parser)]
#[command(
    name = "omnisync",
    // The build (commit, dirty mark, date, profile): build.rs.
    version = env!("OMNISYNC_VERSION"),
    long_version = include_str!(concat!(env!("OUT_DIR"), "/long_version.txt")),
    about = "Keeps prices and stock consistent across ERP, webshops, marketplaces and social catalogs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file (TOML). `OMNISYNC__SECTION__KEY` environment variables override it.
    #[arg(
        long,
        short,
        env = "OMNISYNC_CONFIG",
        default_value = "/etc/omnisync/omnisync.toml"
    )]
    config: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
    /// One self-contained page (inline CSS and SVG).
    Html,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: scheduled polls and reconciles, the outbox, systemd notify.
    Run(ConfigArg),
    /// Check a config file: exits 0 when valid, otherwise lists every problem (file, key,
    /// reason) and exits 2.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Also call every connector's healthcheck.
        #[arg(long, conflicts_with = "no_secrets")]
        connect: bool,
        /// Check everything but whether secret references can be read (for `ExecReload=`,
        /// where systemd 252 does not let the service's credentials be read; the daemon
        /// reads them itself when it reloads).
        #[arg(long)]
        no_secrets: bool,
    },
    /// Make the systems send their webhooks here: each connector that can (eBay: the
    /// Notification API destination for `webhook_endpoint` and a subscription per order
    /// topic) creates what is missing. Idempotent; the others are listed as skipped.
    Subscribe {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Run one reconcile pass now.
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// List what would be pushed; push nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this target channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only these SKUs (repeatable).
        #[arg(long = "sku")]
        skus: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show a recorded run (table, JSON, CSV, or a self-contained HTML page).
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// `latest` or a run id.
        #[arg(long, default_value = "latest")]
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// List open drift: desired, observed, last pushed, cause and age, oldest first.
    Drift {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this cause (source_changed, channel_edit, order_in_flight, write_failed,
        /// write_no_op, mapping, unknown).
        #[arg(long)]
        cause: Option<String>,
        /// Only this field (offer, stock, listing, orphan).
        #[arg(long)]
        field: Option<String>,
        /// Only drift open at least this long (e.g. 90s, 15m, 2h, 1d).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = omnisync::views::DEFAULT_DRIFT_LIMIT)]
        limit: i64,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One item everywhere: where the customer can get it, stock per location, prices per
    /// channel, orders in flight, open drift with its cause, and its timeline.
    Item {
        #[command(flatten)]
        config: ConfigArg,
        /// The SKU.
        sku: String,
        /// Output format (table or json).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Delete history older than `daemon.retention_days` now (the daemon does it daily).
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// Keep this many days instead of `daemon.retention_days`.
        #[arg(long)]
        days: Option<u64>,
    },
    /// List the corrections held for approval on a channel, or release them for pushing.
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        /// The target channel.
        #[arg(long)]
        channel: String,
        /// Release only these SKUs (repeatable); without it, all of the channel's.
        #[arg(long = "sku")]
        skus: Vec<String>,
        /// Only list what is held.
        #[arg(long)]
        list: bool,
    },
    /// List dead letters: corrections an API refused for good, with its reason.
    DeadLetters {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Start the four simulators on loopback with a consistent catalog, write a config for
    /// them, and serve until Ctrl-C (for rehearsals).
    Sim {
        /// First port (ERP); the webshop, marketplace and social simulators take the next three.
        #[arg(long, default_value_t = 18080)]
        port_base: u16,
        /// Catalog size.
        #[arg(long, default_value_t = 1000)]
        skus: usize,
        /// Where to write the daemon config for these simulators.
        #[arg(long, default_value = "omnisync-sim.toml")]
        write_config: PathBuf,
        /// The database that config should use.
        #[arg(long, default_value = "sqlite://omnisync-sim.db")]
        database: String,
    },
    /// Simulators + a temporary SQLite database: seed, drift, converge, report.
    Demo {
        /// Catalog size.
        #[arg(long, default_value_t = 1000)]
        skus: usize,
        /// Print the final report as JSON on the last line.
        #[arg(long)]
        json: bool,
        /// Keep the config and database in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Give up after this many passes.
        #[arg(long, default_value_t = 8)]
        max_passes: usize,
        /// After converging, keep the daemon and the simulators running with the web page,
        /// the JSON API, /healthz and /readyz on this address (e.g. 127.0.0.1:8080) until
        /// SIGINT or SIGTERM.
        #[arg(long, value_name = "ADDR")]
        serve: Option<std::net::SocketAddr>,
    },
    /// Write the man pages or shell completions generated from this CLI (packaging).
    #[command(hide = true, subcommand)]
    Generate(generate::Generate),
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn print_report(r: &RunReport, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{}", r.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(r)?),
        Format::Csv => print!("{}", r.csv()?),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Generate(what) => {
            generate::run(<Cli as clap::CommandFactory>::command(), &what)?;
        }
        Command::Run(c) => {
            let config = match load(&c.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            omnisync::telemetry::init(&config.daemon.log_format);
            omnisync::daemon::run(config).await?;
        }
        Command::Subscribe { config, connector } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            omnisync::telemetry::init(&cfg.daemon.log_format);
            let store = Store::open("sqlite::memory:").await?;
            let engine = Engine::new(cfg.clone(), store)?;
            let ids: Vec<String> = match &connector {
                Some(id) if engine.connector(id).is_some() => vec![id.clone()],
                Some(id) => {
                    eprintln!("{}: no connector {id:?}", cfg.file.display());
                    return Ok(ExitCode::from(2));
                }
                None => cfg.connectors.iter().map(|c| c.id.clone()).collect(),
            };
            let mut failed = false;
            for id in ids {
                let Some(c) = engine.connector(&id) else {
                    continue;
                };
                match c.ensure_webhook_subscriptions().await {
                    Ok(lines) => {
                        for line in lines {
                            println!("{id}: {line}");
                        }
                    }
                    Err(e) if e.kind == omnisync_sdk::ErrorKind::Config && connector.is_none() => {
                        println!("{id}: skipped: {}", e.message);
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("{id}: FAILED: {e}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(3));
            }
        }
        Command::CheckConfig {
            config,
            connect,
            no_secrets,
        } => {
            let loaded = if no_secrets {
                Config::load_without_secrets(&config.config)
            } else {
                Config::load(&config.config)
            };
            let cfg = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if no_secrets {
                println!(
                    "{}: ok ({} connectors; secrets not read)",
                    cfg.file.display(),
                    cfg.connectors.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            for c in &cfg.connectors {
                if let Err(e) = omnisync::registry::build(&c.kind, &c.settings) {
                    eprintln!("{}: connectors.{}: {e}", cfg.file.display(), c.id);
                    return Ok(ExitCode::from(2));
                }
            }
            let unreadable = omnisync::alerts::check_secrets(&cfg.alerts);
            for (key, reason) in &unreadable {
                eprintln!("{}: {key}: {reason}", cfg.file.display());
            }
            if !unreadable.is_empty() {
                return Ok(ExitCode::from(2));
            }
            if connect {
                omnisync::telemetry::init("human");
                let store = Store::open("sqlite::memory:").await?;
                let engine = Engine::new(cfg.clone(), store)?;
                let mut ok = true;
                for (id, r) in engine.healthcheck().await {
                    match r {
                        Ok(()) => println!("{id}: ok"),
                        Err(e) => {
                            ok = false;
                            println!("{id}: FAILED: {e}");
                        }
                    }
                }
                if !ok {
                    return Ok(ExitCode::from(3));
                }
            }
            println!(
                "{}: ok ({} connectors)",
                cfg.file.display(),
                cfg.connectors.len()
            );
        }
        Command::Reconcile {
            config,
            dry_run,
            channel,
            skus,
            format,
        } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            omnisync::telemetry::init(&cfg.daemon.log_format);
            let store = Store::open(&cfg.daemon.database).await?;
            let engine = Engine::new(cfg, store)?;
            let scope = Scope {
                channel,
                skus: (!skus.is_empty()).then_some(skus),
                dry_run,
                ..Scope::default()
            };
            let report = engine.reconcile(&scope).await?;
            print_report(&report, format)?;
            if report.status != "ok" {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Report {
            config,
            run,
            format,
            output,
        } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let store = Store::open(&cfg.daemon.database).await?;
            let id = match run.as_str() {
                "latest" => None,
                n => Some(
                    n.parse::<i64>()
                        .with_context(|| format!("--run {n:?}: expected latest or a run id"))?,
                ),
            };
            let Some(row) = store.run(id).await? else {
                eprintln!("no such run ({run}) in {}", cfg.daemon.database);
                return Ok(ExitCode::FAILURE);
            };
            let Some(json) = row.report else {
                eprintln!("run {} has not finished", row.id);
                return Ok(ExitCode::FAILURE);
            };
            let report: RunReport =
                serde_json::from_str(&json).context("reading the stored report")?;
            let text = match format {
                ReportFormat::Table => report.table(),
                ReportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
                ReportFormat::Csv => report.csv()?,
                ReportFormat::Html => {
                    let now = omnisync::outbox::now_ms();
                    let series = omnisync::views::consistency_series(&store, None, 50).await?;
                    let filter = omnisync::views::DriftFilter {
                        limit: Some(500),
                        ..Default::default()
                    };
                    let drift = omnisync::views::open_drift(&store, &filter, now).await?;
                    let at = omnisync::views::rfc3339(now);
                    omnisync::views::report_html(&report, &series, &drift, &at)?
                }
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        Command::Drift {
            config,
            channel,
            cause,
            field,
            older_than,
            limit,
            format,
        } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let filter = omnisync::views::DriftFilter {
                channel,
                cause,
                field,
                older_than_ms: older_than
                    .as_deref()
                    .map(omnisync::views::parse_duration)
                    .transpose()
                    .context("--older-than")?,
                limit: Some(limit),
                sku: None,
            };
            filter.check(Some(&cfg))?;
            let store = Store::open(&cfg.daemon.database).await?;
            let rows =
                omnisync::views::open_drift(&store, &filter, omnisync::outbox::now_ms()).await?;
            match format {
                Format::Table => print!("{}", omnisync::views::drift_table(&rows)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Csv => print!("{}", omnisync::views::drift_csv(&rows)?),
            }
        }
        Command::Item {
            config,
            sku,
            format,
        } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if matches!(format, Format::Csv) {
                anyhow::bail!("--format csv: an item has no single table; use table or json");
            }
            let store = Store::open(&cfg.daemon.database).await?;
            let Some(view) = omnisync::views::item(&store, &cfg, &sku).await? else {
                eprintln!("no item {sku:?} in {}", cfg.daemon.database);
                return Ok(ExitCode::FAILURE);
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                _ => print!("{}", omnisync::views::item_table(&view)),
            }
        }
        Command::Prune { config, days } => {
            let mut cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Some(d) = days {
                anyhow::ensure!(d >= 1, "--days {d}: must be at least 1");
                cfg.daemon.retention_days = d;
            }
            let store = Store::open(&cfg.daemon.database).await?;
            let n =
                omnisync::views::prune_retained(&store, &cfg, omnisync::outbox::now_ms()).await?;
            println!(
                "kept {} days; deleted {} runs, {} closed drift, {} push log rows, {} observed changes, \
                 {} webhook deliveries, {} released reservations, {} resolved dead letters",
                cfg.daemon.retention_days,
                n.runs,
                n.drift_history,
                n.push_log,
                n.item_events,
                n.webhook_inbox,
                n.reservations,
                n.dead_letters
            );
        }
        Command::Approve {
            config,
            channel,
            skus,
            list,
        } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let store = Store::open(&cfg.daemon.database).await?;
            if list {
                for (sku, field, location, value, reason) in store.held(&channel).await? {
                    println!(
                        "{sku}\t{field}{}\t{value}\t{reason}",
                        if location.is_empty() {
                            String::new()
                        } else {
                            format!("@{location}")
                        }
                    );
                }
            } else {
                let only = (!skus.is_empty()).then_some(skus.as_slice());
                let n = store
                    .approve(&channel, only, omnisync::outbox::now_ms())
                    .await?;
                println!(
                    "released {n} held corrections on {channel}; the running daemon pushes them within a second"
                );
            }
        }
        Command::DeadLetters { config, format } => {
            let cfg = match load(&config.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let store = Store::open(&cfg.daemon.database).await?;
            let dead = store.dead_letters(1000).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&dead)?),
                Format::Csv | Format::Table => {
                    let mut w = csv::WriterBuilder::new()
                        .delimiter(if matches!(format, Format::Csv) {
                            b','
                        } else {
                            b'\t'
                        })
                        .from_writer(std::io::stdout());
                    w.write_record([
                        "id", "channel", "sku", "field", "location", "value", "attempts", "reason",
                    ])?;
                    for d in dead {
                        w.write_record([
                            d.id.to_string(),
                            d.channel,
                            d.sku,
                            d.field,
                            d.location,
                            d.value,
                            d.attempts.to_string(),
                            d.reason,
                        ])?;
                    }
                    w.flush()?;
                }
            }
        }
        Command::Sim {
            port_base,
            skus,
            write_config,
            database,
        } => {
            omnisync::telemetry::init("human");
            omnisync::demo::serve_simulators(port_base, skus, &write_config, &database).await?;
        }
        Command::Demo {
            skus,
            json,
            dir,
            max_passes,
            serve,
        } => {
            if std::env::var_os("RUST_LOG").is_some() {
                omnisync::telemetry::init("human");
            }
            let options = omnisync::demo::DemoOptions {
                skus,
                json,
                dir,
                max_passes,
            };
            let outcome = omnisync::demo::run_and_serve(options, serve).await?;
            if !outcome.converged {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
