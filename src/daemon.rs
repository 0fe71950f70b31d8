//! `omnisync run`: the long-running daemon.
//!
//! Starts with a full reconcile, then runs each connector's poll on its cron schedule (a
//! poll of a target reconciles that channel; a poll of a source reconciles everything), the
//! full reconcile on its schedule, and an outbox loop that pushes rescheduled corrections
//! when they fall due. Passes never overlap (the engine serializes them). Tells systemd
//! `READY=1` once the store is migrated and connectors are built, pings the watchdog from
//! the scheduler's heartbeat, and on SIGTERM/SIGINT finishes the pass in progress, says
//! `STOPPING=1` and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};
use crate::engine::{Engine, Scope};
use crate::outbox::now_ms;
use crate::schedule::Schedule;

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = crate::store::Store::open(&config.daemon.database).await?;
    let engine = Arc::new(Engine::new(config, store)?);
    for (id, result) in engine.healthcheck().await {
        match result {
            Ok(()) => tracing::info!(connector = %id, "healthcheck ok"),
            Err(e) => tracing::warn!(connector = %id, error = %e, "healthcheck failed; will keep trying on schedule"),
        }
    }
    let stop = CancellationToken::new();
    let heartbeat = Arc::new(AtomicI64::new(now_ms()));
    notify(&[NotifyState::Ready, NotifyState::Status("reconciling")]);

    let mut tasks = tokio::task::JoinSet::new();
    // Full reconcile: once now, then on schedule.
    {
        let (engine, stop, beat) = (engine.clone(), stop.clone(), heartbeat.clone());
        let schedule = engine.config().reconcile_schedule.clone();
        tasks.spawn(async move {
            let full = Scope::default();
            pass(&engine, &full, &beat).await;
            scheduled(&schedule, &stop, &beat, || pass(&engine, &full, &beat)).await;
        });
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
                beat.store(now_ms(), Ordering::Relaxed);
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
                let age = now_ms() - beat.load(Ordering::Relaxed);
                if age < timeout.as_millis() as i64 * 4 {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(age_ms = age, "scheduler heartbeat stale; not pinging the watchdog");
                }
            }
        });
    }

    shutdown_signal().await;
    tracing::info!("stopping: finishing the pass in progress");
    notify(&[NotifyState::Stopping]);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

async fn pass(engine: &Engine, scope: &Scope, beat: &AtomicI64) {
    beat.store(now_ms(), Ordering::Relaxed);
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
        }
        Err(e) => tracing::error!(error = format!("{e:#}"), "reconcile failed"),
    }
    beat.store(now_ms(), Ordering::Relaxed);
}

async fn scheduled<F, Fut>(schedule: &Schedule, stop: &CancellationToken, beat: &AtomicI64, mut job: F)
where
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
        beat.store(now_ms(), Ordering::Relaxed);
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
