//! `omnisync run`: the long-running daemon.
//!
//! Starts with a full reconcile, then runs each connector's poll on its cron schedule (a
//! poll of a target reconciles that channel; a poll of a source reconciles everything), the
//! full reconcile on its schedule, and an outbox loop that pushes rescheduled corrections
//! when they fall due. Passes never overlap (the engine serializes them). The HTTP server
//! ([`crate::http`], `daemon.http.listen`) takes webhooks into the durable inbox and the
//! inbox processor ([`crate::inbox::Processor`]) turns them into scoped passes; `/readyz`
//! answers 200 once the first full pass has finished. Tells systemd `READY=1` once the
//! store is migrated, connectors are built and checked and the listener is bound, pings
//! the watchdog from the scheduler's heartbeat, and on SIGTERM/SIGINT answers webhooks
//! with 503, finishes the pushes in flight within `daemon.drain_timeout_secs`, says
//! `STOPPING=1` and exits 0; a second signal exits at once. Nothing queued is lost either
//! way: the outbox is durable and a claimed correction stays queued until it is settled.
//! With `OMNISYNC_TEST_HOOKS=1` in the environment, SIGUSR1 stops the heartbeat (a
//! test-only trigger for the watchdog).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};
use crate::engine::{Engine, Scope};
use crate::http::{HttpState, Readiness};
use crate::inbox::{Processor, WebhookStats};
use crate::outbox::now_ms;
use crate::schedule::Schedule;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the config.
///
/// A reload re-reads and validates the config file. If it is broken, or it changes what
/// needs a restart (the database, the listen address), the daemon keeps running on the old
/// config and says why (log and `STATUS=`). Otherwise the daemon's tasks finish the pass in
/// progress and start again on the new config, on the same listening socket (webhooks wait
/// in its queue meanwhile), bracketed by `RELOADING=1` + `MONOTONIC_USEC=` … `READY=1`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = crate::store::Store::open(&config.daemon.database).await?;
    let engine = Arc::new(Engine::new(config, store.clone())?);
    healthcheck(&engine).await;
    let file = engine.config().file.clone();
    let shown = file.display().to_string();
    let addr = engine
        .config()
        .daemon
        .http
        .listen_addr()
        .with_context(|| format!("{shown}: daemon.http.listen"))?;
    let socket = std::net::TcpListener::bind(addr)
        .with_context(|| format!("{shown}: daemon.http.listen: cannot listen on {addr}"))?;
    socket
        .set_nonblocking(true)
        .context("setting the listening socket non-blocking")?;
    let listener = || -> anyhow::Result<tokio::net::TcpListener> {
        Ok(tokio::net::TcpListener::from_std(socket.try_clone()?)?)
    };
    let mut daemon = start(engine, listener()?)?;
    tracing::info!(listen = %daemon.local_addr(), "serving /webhooks/{{connector_id}}, /healthz and /readyz");

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => {
                let mut states = vec![NotifyState::Reloading];
                if let Ok(usec) = NotifyState::monotonic_usec_now() {
                    states.push(usec);
                }
                notify(&states);
                let current = daemon.engine.clone();
                match reloaded(&file, &current, &store).await {
                    Ok(engine) => {
                        tracing::info!(file = %shown, "reloading: finishing the pass in progress");
                        daemon.halt().await;
                        daemon = start(engine, listener()?)?;
                        tracing::info!(file = %shown, "reloaded");
                    }
                    Err(why) => {
                        tracing::error!(file = %shown, reason = %why, "reload refused; still running on the previous config");
                        notify(&[
                            NotifyState::Ready,
                            NotifyState::Status(&format!("reload refused, running on the previous config: {why}")),
                        ]);
                    }
                }
            }
        }
    }
    let deadline = daemon.config.daemon.drain_timeout_secs;
    tracing::info!(
        drain_timeout_secs = deadline,
        "stopping: webhooks answered 503, finishing the pushes in flight; a second signal exits at once"
    );
    let again = shutdown_signal();
    tokio::select! {
        _ = daemon.shutdown() => tracing::info!("stopped"),
        _ = again => tracing::warn!(
            "second signal: exiting now; queued corrections stay in the outbox and are pushed after the next start"
        ),
    }
    Ok(())
}

async fn healthcheck(engine: &Engine) {
    for (id, result) in engine.healthcheck().await {
        log_health(&id, result);
    }
}

fn log_health(id: &str, result: Result<(), omnisync_sdk::ConnectorError>) {
    {
        match result {
            Ok(()) => tracing::info!(connector = %id, "healthcheck ok"),
            Err(e) => {
                tracing::warn!(connector = %id, error = %e, "healthcheck failed; will keep trying on schedule")
            }
        }
    }
}

/// The engine for the config now in `file`, or why the running one must stay.
///
/// Connectors whose kind and settings did not change are carried over as they are (their
/// HTTP connections, request budgets and caches); added and changed ones are built and
/// health-checked; removed ones are dropped. (A secret rotated behind an unchanged
/// reference is read again only when its connector is rebuilt or on restart — which
/// systemd's `LoadCredential=` needs anyway.)
async fn reloaded(
    file: &std::path::Path,
    old: &Engine,
    store: &crate::store::Store,
) -> Result<Arc<Engine>, String> {
    let current = old.config();
    let config = Config::load(file).map_err(|e| e.to_string().trim().replace('\n', " "))?;
    if config.daemon.database != current.daemon.database {
        return Err("daemon.database changed: that needs a restart".into());
    }
    if config.daemon.http.listen != current.daemon.http.listen {
        return Err("daemon.http.listen changed: that needs a restart".into());
    }
    let mut connectors = Vec::new();
    let mut rebuilt = Vec::new();
    for c in &config.connectors {
        let unchanged = current
            .connector(&c.id)
            .is_some_and(|o| o.kind == c.kind && o.settings == c.settings);
        match old.connector(&c.id) {
            Some(existing) if unchanged => connectors.push((c.id.clone(), existing.clone())),
            _ => {
                let built = crate::registry::build(&c.kind, &c.settings)
                    .map_err(|e| format!("connectors.{}: {e:#}", c.id))?;
                rebuilt.push((c.id.clone(), built.clone()));
                connectors.push((c.id.clone(), built));
            }
        }
    }
    let removed: Vec<&str> = current
        .connectors
        .iter()
        .filter(|o| config.connector(&o.id).is_none())
        .map(|o| o.id.as_str())
        .collect();
    let engine =
        Engine::with_connectors(config, store.clone(), connectors).map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        rebuilt = ?rebuilt.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        removed = ?removed,
        "reload: connectors not listed are kept as they were"
    );
    for (id, connector) in &rebuilt {
        let scope = omnisync_sdk::telemetry::scope(Arc::from(id.as_str()), connector.healthcheck());
        log_health(id, scope.await);
    }
    Ok(Arc::new(engine))
}

/// A started daemon: its tasks, its HTTP address and what it reports.
pub struct Daemon {
    addr: SocketAddr,
    config: Config,
    engine: Arc<Engine>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    server_stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    readiness: Arc<Readiness>,
    webhooks: Arc<WebhookStats>,
}

impl Daemon {
    /// Where the HTTP server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `/readyz` answers.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The webhook counters.
    pub fn webhook_stats(&self) -> &Arc<WebhookStats> {
        &self.webhooks
    }

    /// Stops: `/readyz` and the webhook intake answer 503, systemd hears `STOPPING=1`, the
    /// loops finish the pass in progress within `daemon.drain_timeout_secs` (after that
    /// they are abandoned: claimed corrections were never taken off the outbox, so nothing
    /// queued is lost), then the server finishes the requests in progress.
    pub async fn shutdown(mut self) {
        self.readiness.set_stopping();
        notify(&[NotifyState::Stopping]);
        self.halt().await;
    }

    /// Ends the tasks (finishing the pass in progress, within the drain deadline) and then
    /// the HTTP server, without telling systemd anything. Until the server stops, webhooks
    /// are still taken into the inbox (or answered 503 when stopping).
    async fn halt(&mut self) {
        self.stop.cancel();
        let deadline = Duration::from_secs(self.config.daemon.drain_timeout_secs);
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                drain_timeout_secs = deadline.as_secs(),
                "drain deadline passed: abandoning the pushes in flight; their corrections stay queued"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.server_stop.cancel();
        if let Some(server) = self.server.take()
            && let Err(e) = server.await
        {
            tracing::error!(error = %e, "the HTTP server task failed");
        }
    }
}

/// Starts the daemon's tasks on an engine whose store is open and a bound listener: tells
/// systemd `READY=1`, then runs the first full reconcile (`/readyz` turns 200 when it has
/// finished), the schedules, the outbox loop, the HTTP server and the inbox processor.
/// Must be called inside a Tokio runtime.
pub fn start(engine: Arc<Engine>, listener: tokio::net::TcpListener) -> anyhow::Result<Daemon> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let stop = CancellationToken::new();
    let heartbeat = Arc::new(Heartbeat::new());
    let server_stop = CancellationToken::new();
    let readiness = Arc::new(Readiness::new());
    let webhooks = Arc::new(WebhookStats::default());
    let wake = Arc::new(Notify::new());
    notify(&[NotifyState::Ready, NotifyState::Status("reconciling")]);
    readiness.first_pass();

    crate::metrics::install();
    let mut tasks = tokio::task::JoinSet::new();
    let server;
    // Full reconcile: once now, then on schedule.
    {
        let (engine, stop, beat, ready) = (
            engine.clone(),
            stop.clone(),
            heartbeat.clone(),
            readiness.clone(),
        );
        let schedule = engine.config().reconcile_schedule.clone();
        tasks.spawn(async move {
            let full = Scope::default();
            // The pass has already put its figures in STATUS=.
            pass(&engine, &full, &beat).await;
            ready.set_ready();
            scheduled(&schedule, &stop, &beat, || pass(&engine, &full, &beat)).await;
        });
    }
    // HTTP: webhooks into the inbox, health and readiness.
    {
        let router = crate::http::router(HttpState {
            engine: engine.clone(),
            stats: webhooks.clone(),
            readiness: readiness.clone(),
            wake: wake.clone(),
            body_limit: engine.config().daemon.http.body_limit_bytes,
        });
        let stop = server_stop.clone();
        server = Some(tokio::spawn(async move {
            if let Err(e) = crate::http::serve(listener, router, stop).await {
                tracing::error!(error = %e, "the HTTP server failed; webhooks are not received");
            }
        }));
    }
    // Inbox: stored deliveries → scoped passes.
    {
        let coalesce = Duration::from_millis(engine.config().daemon.http.coalesce_ms);
        let processor = Processor::new(engine.clone(), webhooks.clone(), wake, coalesce);
        tasks.spawn(processor.run(stop.clone()));
    }
    // Per-connector polls.
    for c in engine.config().connectors.clone() {
        let Some(schedule) = c.schedule.clone() else {
            continue;
        };
        let (engine, stop, beat) = (engine.clone(), stop.clone(), heartbeat.clone());
        let scope = if c.price == Role::Source || c.stock == Role::Source {
            Scope::default()
        } else {
            Scope {
                channel: Some(c.id.clone()),
                ..Scope::default()
            }
        };
        tasks.spawn(async move {
            scheduled(&schedule, &stop, &beat, || pass(&engine, &scope, &beat)).await;
        });
    }
    // Outbox: push rescheduled corrections when due.
    {
        let (engine, stop, beat) = (engine.clone(), stop.clone(), heartbeat.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                beat.beat();
                if let Err(e) = engine.drain_due().await {
                    tracing::error!(error = %e, "outbox drain failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    // Retention (views): a minute after start, then once a day, delete history older than
    // `daemon.retention_days`. Open drift, the outbox and open dead letters are never touched.
    {
        let (engine, stop) = (engine.clone(), stop.clone());
        tasks.spawn(async move {
            let mut wait = Duration::from_secs(60);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = Duration::from_secs(24 * 3600);
                let now = crate::outbox::now_ms();
                match crate::views::prune_retained(engine.store(), engine.config(), now).await {
                    Ok(n) => tracing::info!(
                        days = engine.config().daemon.retention_days,
                        runs = n.runs,
                        drift_history = n.drift_history,
                        push_log = n.push_log,
                        item_events = n.item_events,
                        webhook_inbox = n.webhook_inbox,
                        "pruned history"
                    ),
                    Err(e) => tracing::error!(error = %e, "pruning history failed"),
                }
            }
        });
    }
    // Alerts: evaluate the rules every `alerts.evaluate_every_secs` and notify (state in
    // the store, so a restart or a reload re-sends nothing). No rules, no task.
    if !engine.config().alerts.rules.is_empty() {
        let alerter = crate::alerts::Alerter::new(
            &engine.config().alerts,
            engine.store().clone(),
            Some(webhooks.clone()),
        );
        tasks.spawn(alerter.run(stop.clone()));
    }
    // Watchdog: ping only while the loops are alive.
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        let period = timeout / 2;
        let (stop, beat) = (stop.clone(), heartbeat.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(period) => {}
                }
                let age = beat.age_ms();
                if age < timeout.as_millis() as i64 * 4 {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        age_ms = age,
                        "scheduler heartbeat stale; not pinging the watchdog"
                    );
                }
            }
        });
    }

    // Test-only: with OMNISYNC_TEST_HOOKS=1, SIGUSR1 stops the heartbeat as a stuck
    // scheduler would, so a test can watch systemd's watchdog restart the daemon.
    if std::env::var("OMNISYNC_TEST_HOOKS").as_deref() == Ok("1") {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::user_defined1()) {
            Ok(mut usr1) => {
                let (stop, beat) = (stop.clone(), heartbeat.clone());
                tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = usr1.recv() => {
                            tracing::warn!("test hook: SIGUSR1 stopped the scheduler heartbeat");
                            beat.freeze();
                        }
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "test hook: cannot listen for SIGUSR1"),
        }
    }

    Ok(Daemon {
        addr,
        config: engine.config().clone(),
        engine: engine.clone(),
        stop,
        tasks,
        server_stop,
        server,
        readiness,
        webhooks,
    })
}

/// The scheduler's heartbeat: every loop beats it, and the watchdog pings systemd only
/// while it is fresh, so a stuck scheduler gets the daemon restarted.
#[derive(Debug)]
struct Heartbeat {
    at: AtomicI64,
    frozen: AtomicBool,
}

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat {
            at: AtomicI64::new(now_ms()),
            frozen: AtomicBool::new(false),
        }
    }

    /// A loop is alive now.
    fn beat(&self) {
        if !self.frozen.load(Ordering::Relaxed) {
            self.at.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Milliseconds since the last beat.
    fn age_ms(&self) -> i64 {
        now_ms() - self.at.load(Ordering::Relaxed)
    }

    /// Beats are ignored from now on (the test hook).
    fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }
}

async fn pass(engine: &Engine, scope: &Scope, beat: &Heartbeat) {
    beat.beat();
    match engine.reconcile(scope).await {
        Ok(r) => {
            for c in &r.channels {
                tracing::info!(
                    run = r.run_id,
                    channel = %c.id,
                    consistency = c.consistency,
                    checked = c.items_checked,
                    queued = c.corrections.queued,
                    sent = c.corrections.sent,
                    failed = c.corrections.failed,
                    "reconciled"
                );
            }
            notify(&[NotifyState::Status(&status_line(&r))]);
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reconcile failed");
            notify(&[NotifyState::Status(&format!("last pass failed: {e}"))]);
        }
    }
    beat.beat();
}

/// What `systemctl status` shows after a pass, e.g. "4 connectors, 0 failing; run 12
/// (full) at 10:42:07Z: consistency webshop 1.0000, marketplace 0.9980; 3 queued".
fn status_line(r: &crate::report::RunReport) -> String {
    let failing = r.channels.iter().filter(|c| c.error.is_some()).count();
    let consistency: Vec<String> = r
        .channels
        .iter()
        .filter(|c| c.role != "source")
        .map(|c| format!("{} {:.4}", c.id, c.consistency))
        .collect();
    let queued: u64 = r.channels.iter().map(|c| c.corrections.queued).sum();
    let at = r.finished_at.get(11..19).unwrap_or(&r.finished_at);
    format!(
        "{} connectors, {failing} failing; run {} ({}) at {at}Z: consistency {}; {queued} queued",
        r.channels.len(),
        r.run_id,
        r.scope,
        consistency.join(", ")
    )
}

async fn scheduled<F, Fut>(
    schedule: &Schedule,
    stop: &CancellationToken,
    beat: &Heartbeat,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let Some(wait) = schedule.until_next() else {
            return;
        };
        // Wake at least every 10 s so the heartbeat stays fresh while idle.
        let nap = wait.min(Duration::from_secs(10));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(nap) => {}
        }
        beat.beat();
        if nap == wait {
            job().await;
        }
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Resolves on the first SIGINT or SIGTERM (also used by `omnisync demo --serve`).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    if let Err(e) = ctrl_c.await {
                        tracing::error!(error = %e, "cannot listen for SIGINT either");
                    }
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if let Err(e) = ctrl_c.await {
        tracing::error!(error = %e, "cannot listen for SIGINT");
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;
    use crate::report::{ChannelReport, RunReport};

    #[test]
    fn status_line_names_failures_consistency_and_backlog() {
        let mut shop = ChannelReport {
            id: "webshop".into(),
            role: "target/target".into(),
            consistency: 0.5,
            ..Default::default()
        };
        shop.corrections.queued = 3;
        let erp = ChannelReport {
            id: "erp".into(),
            role: "source".into(),
            error: Some("HTTP 502".into()),
            ..Default::default()
        };
        let r = RunReport {
            run_id: 12,
            scope: "full".into(),
            finished_at: "2026-11-23T10:42:07.123Z".into(),
            channels: vec![erp, shop],
            ..Default::default()
        };
        assert_eq!(
            status_line(&r),
            "2 connectors, 1 failing; run 12 (full) at 10:42:07Z: consistency webshop 0.5000; 3 queued"
        );
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    const CONFIG: &str = r#"
[daemon]
database = "sqlite::memory:"

[canonical]
currency = "EUR"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
locations = { wh = "11" }
[connectors.erp.settings]
base_url = "http://127.0.0.1:9"
database = "shop"
login = "admin"
password = "literal:admin"
company = 1
locations = [11]
currency = "EUR"

[connectors.market]
kind = "ebay"
price = "target"
stock = "target"
currency = "EUR"
stock_from = ["wh"]
[connectors.market.settings]
base_url = "http://127.0.0.1:9"
access_token = "literal:token"
"#;

    #[tokio::test]
    async fn reload_keeps_the_old_config_unless_the_new_one_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("omnisync.toml");
        std::fs::write(&file, CONFIG).unwrap();
        let store = crate::store::Store::open("sqlite::memory:").await.unwrap();
        let current = Engine::new(Config::load(&file).unwrap(), store.clone()).unwrap();

        // A good config gives a new engine with the new rules.
        std::fs::write(
            &file,
            CONFIG.replace(
                "stock_from = [\"wh\"]",
                "stock_from = [\"wh\"]\nsafety_buffer = 3",
            ),
        )
        .unwrap();
        let engine = reloaded(&file, &current, &store).await.unwrap();
        let buffer = engine
            .config()
            .connector("market")
            .unwrap()
            .stock_rules
            .as_ref()
            .unwrap()
            .safety_buffer;
        assert_eq!(buffer, 3);
        // Only rules changed: both connectors are carried over as they were.
        for id in ["erp", "market"] {
            assert!(Arc::ptr_eq(
                engine.connector(id).unwrap(),
                current.connector(id).unwrap()
            ));
        }

        // A connector whose settings changed is rebuilt alone.
        std::fs::write(
            &file,
            CONFIG.replace(
                "access_token = \"literal:token\"",
                "access_token = \"literal:rotated\"",
            ),
        )
        .unwrap();
        let engine = reloaded(&file, &current, &store).await.unwrap();
        assert!(Arc::ptr_eq(
            engine.connector("erp").unwrap(),
            current.connector("erp").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            engine.connector("market").unwrap(),
            current.connector("market").unwrap()
        ));

        // A broken one is refused with the file, key and reason.
        std::fs::write(&file, CONFIG.replace("kind = \"ebay\"", "kind = \"ebey\"")).unwrap();
        let why = reloaded(&file, &current, &store).await.err().unwrap();
        assert!(
            why.contains("connectors.market.kind") && why.contains("ebey"),
            "{why}"
        );

        // What needs a restart is refused too.
        std::fs::write(
            &file,
            CONFIG.replace("sqlite::memory:", "sqlite:///tmp/other.db"),
        )
        .unwrap();
        let why = reloaded(&file, &current, &store).await.err().unwrap();
        assert!(why.contains("daemon.database"), "{why}");
    }
}
