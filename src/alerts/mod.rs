//! Alerts: rules over the store and the daemon's counters, incidents with a lifecycle, and
//! notifiers that announce each incident once when it opens and once when it resolves.
//!
//! Every `alerts.evaluate_every_secs` the [`Alerter`] reads what the rules need (open drift
//! and oversell risk, dead letters and held corrections, counted per channel (and field) in
//! SQL with a few example SKUs each, so the read does not grow with the number of open
//! values; the finished runs' per-channel errors; the webhook 401 counter), evaluates the
//! rules ([`rules::evaluate`], pure) into firing incidents keyed by rule + channel (+ field),
//! opens and resolves incidents in `alert_incidents`, and tells each rule's notifiers what
//! changed. What each notifier was last told is stored per (incident key, notifier) in
//! `alert_notices`, so:
//!
//! - an incident is announced once on open and once on resolve;
//! - an incident that flaps is not announced open again within the rule's cooldown (counted
//!   from the last opening sent); if it is still open when the cooldown ends, it is;
//! - a restart (or a config reload) sends nothing for an incident already announced;
//! - a notifier that fails is logged and tried again at the next evaluation, without
//!   holding up the others.

pub mod config;
pub mod notify;
pub mod rules;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use omnisync_sdk::retry::RetryPolicy;
use tokio_util::sync::CancellationToken;

pub use config::AlertsConfig;
use notify::{Event, IncidentView, Message, Notifier};
use rules::{ConnectorTracker, World};

use crate::alerts::config::Condition;
use crate::inbox::WebhookStats;
use crate::store::Store;

/// An alerting failure. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A database call failed.
    #[error("{context}: {source}")]
    Db {
        /// What we were doing.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A notifier's secret could not be read.
    #[error("notifier {notifier}: {source}")]
    Secret {
        /// The notifier.
        notifier: String,
        /// Why (names the reference, never the value).
        source: omnisync_sdk::secret::SecretError,
    },
    /// A notifier could not be built.
    #[error("notifier {notifier}: {reason}")]
    Build {
        /// The notifier.
        notifier: String,
        /// Why.
        reason: String,
    },
    /// A delivery failed after its retries.
    #[error("notifier {notifier}: delivery failed: {reason}")]
    Delivery {
        /// The notifier.
        notifier: String,
        /// Why.
        reason: String,
    },
}

/// Resolves every notifier secret (URLs, passwords) without keeping them: (dotted key,
/// reason) for each that cannot be read, for `omnisync check-config`. The reason names the
/// reference, never a value.
pub fn check_secrets(config: &AlertsConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in &config.notifiers {
        let refs: Vec<(&str, &omnisync_sdk::SecretRef)> = match &n.target {
            config::NotifierTarget::Webhook { url } | config::NotifierTarget::Slack { url } => {
                vec![("url", url)]
            }
            config::NotifierTarget::Smtp(smtp) => {
                smtp.password.iter().map(|p| ("password", p)).collect()
            }
        };
        for (key, r) in refs {
            if let Err(e) = r.resolve() {
                out.push((format!("alerts.notifiers.{}.{key}", n.name), e.to_string()));
            }
        }
    }
    out
}

/// One notification sent or attempted: (incident key, notifier, event).
pub type Notice = (String, String, Event);

/// What one evaluation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Incidents firing now.
    pub firing: Vec<String>,
    /// Incidents opened by this evaluation.
    pub opened: Vec<String>,
    /// Incidents resolved by this evaluation.
    pub resolved: Vec<String>,
    /// Notifications delivered.
    pub sent: Vec<Notice>,
    /// Notifications that failed (tried again next time).
    pub failed: Vec<Notice>,
}

/// Runs runs read per query when following the run history.
const RUN_PAGE: i64 = 500;

/// Evaluates the alert rules and notifies.
pub struct Alerter {
    config: AlertsConfig,
    store: Store,
    notifiers: BTreeMap<String, Notifier>,
    webhooks: Option<Arc<WebhookStats>>,
    webhook_sample: Option<(u64, i64)>,
    tracker: Option<ConnectorTracker>,
    policy: RetryPolicy,
}

impl Alerter {
    /// An alerter over `store`, with the notifiers built (secrets resolved) and, when given,
    /// the daemon's webhook counters for the signature-failure rule.
    pub fn new(
        config: &AlertsConfig,
        store: Store,
        webhooks: Option<Arc<WebhookStats>>,
    ) -> Alerter {
        let notifiers = config
            .notifiers
            .iter()
            .map(|n| (n.name.clone(), Notifier::build(n)))
            .collect();
        Alerter {
            config: config.clone(),
            store,
            notifiers,
            webhooks,
            webhook_sample: None,
            tracker: None,
            policy: notify::default_policy(),
        }
    }

    /// Uses another retry policy for deliveries (tests use a fast one).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Alerter {
        self.policy = policy;
        self
    }

    fn needs(&self, f: impl Fn(&Condition) -> bool) -> bool {
        self.config.rules.iter().any(|r| f(&r.condition))
    }

    /// Reads what the configured rules look at.
    async fn world(&mut self, now: i64) -> Result<World, AlertError> {
        let mut world = World::default();
        let rules = &self.config.rules;
        let cutoffs = rules::drift_cutoffs(rules, now);
        if !cutoffs.is_empty() {
            world.drift = store::drift(&self.store, &cutoffs, |channel, field| {
                rules::drift_watched(rules, channel, field)
            })
            .await?;
        }
        for q in rules::oversell_queries(rules, now) {
            let groups = store::oversell(&self.store, q, |channel| {
                rules::oversell_watched(rules, q, now, channel)
            })
            .await?;
            world.oversell.insert(q, groups);
        }
        if self.needs(|c| matches!(c, Condition::DeadLetters { .. })) {
            world.dead_letters = store::dead_letters(&self.store, |channel, count| {
                rules::items_fire(rules, true, channel, count)
            })
            .await?;
        }
        if self.needs(|c| matches!(c, Condition::Held { .. })) {
            world.held = store::held(&self.store, |channel, count| {
                rules::items_fire(rules, false, channel, count)
            })
            .await?;
        }
        if self.needs(|c| matches!(c, Condition::ConnectorFailing { .. })) {
            let mut tracker = self.tracker.take().unwrap_or_default();
            loop {
                let runs = store::runs_after(&self.store, tracker.cursor, RUN_PAGE).await?;
                for run in &runs {
                    tracker.observe(run);
                }
                if (runs.len() as i64) < RUN_PAGE || tracker.cursor == 0 {
                    break;
                }
            }
            world.failing = tracker.failing.clone();
            self.tracker = Some(tracker);
        }
        if let Some(stats) = &self.webhooks {
            let count = stats.snapshot().unauthorized;
            world.webhook_failures_per_minute = match self.webhook_sample {
                Some((before, at)) if now > at => {
                    let delta = count.saturating_sub(before) as f64;
                    Some(delta * 60_000.0 / (now - at) as f64)
                }
                _ => None,
            };
            if self.webhook_sample.is_none_or(|(_, at)| now > at) {
                self.webhook_sample = Some((count, now));
            }
        }
        Ok(world)
    }

    /// One evaluation at `now` (Unix ms): read, evaluate, open and resolve incidents, notify.
    pub async fn evaluate(&mut self, now: i64) -> Result<PassOutcome, AlertError> {
        let world = self.world(now).await?;
        let eval = rules::evaluate(&self.config.rules, &world, now);
        let mut outcome = PassOutcome {
            firing: eval.firing.keys().cloned().collect(),
            ..PassOutcome::default()
        };

        let open = store::open_incidents(&self.store).await?;
        for (key, f) in &eval.firing {
            match open.get(key) {
                Some(i) => store::touch(&self.store, i.id, f, now).await?,
                None => {
                    store::open(&self.store, f, now).await?;
                    outcome.opened.push(key.clone());
                }
            }
        }
        for (key, i) in &open {
            if eval.firing.contains_key(key) {
                continue;
            }
            // A rule that could not be evaluated keeps its incidents as they are; a rule
            // no longer configured resolves them.
            if self.config.rule(&i.rule).is_some() && eval.unknown.contains(&i.rule) {
                continue;
            }
            store::resolve(&self.store, i.id, now).await?;
            outcome.resolved.push(key.clone());
        }

        // Work out what each notifier must be told.
        let open = store::open_incidents(&self.store).await?;
        let notices = store::notices(&self.store).await?;
        let mut jobs: Vec<(String, String, Event, IncidentView)> = Vec::new();
        for (key, inc) in &open {
            let Some(rule) = self.config.rule(&inc.rule) else {
                continue;
            };
            let cooldown = rule.cooldown.as_millis() as i64;
            for n in &rule.notify {
                let notice = notices.get(&(key.clone(), n.clone()));
                if notice.is_some_and(|x| x.told == "open") {
                    continue;
                }
                // Re-opened within the cooldown of the last opening sent: stay quiet.
                if notice
                    .and_then(|x| x.open_sent_at)
                    .is_some_and(|t| now - t < cooldown)
                {
                    continue;
                }
                jobs.push((key.clone(), n.clone(), Event::Open, inc.clone()));
            }
        }
        for ((key, n), notice) in &notices {
            if notice.told != "open" || open.contains_key(key) {
                continue;
            }
            let incident = match self.notifiers.contains_key(n) {
                true => store::latest_incident(&self.store, key).await?,
                false => None,
            };
            match incident {
                Some(inc) => jobs.push((key.clone(), n.clone(), Event::Resolved, inc)),
                // The notifier is gone from the config: nothing to tell, forget it.
                None => store::record_notice(&self.store, key, n, "resolved", now).await?,
            }
        }

        let policy = self.policy;
        let notifiers = &self.notifiers;
        let sends = jobs.into_iter().map(|(key, n, event, inc)| async move {
            let result = match notifiers.get(&n) {
                Some(notifier) => notifier.send(&Message::new(event, inc), policy).await,
                None => Err(AlertError::Build {
                    notifier: n.clone(),
                    reason: "not configured".into(),
                }),
            };
            (key, n, event, result)
        });
        for (key, n, event, result) in futures::future::join_all(sends).await {
            match result {
                Ok(()) => {
                    tracing::info!(incident = %key, notifier = %n, event = event.as_str(), "alert sent");
                    store::record_notice(&self.store, &key, &n, event.as_str(), now).await?;
                    outcome.sent.push((key, n, event));
                }
                Err(e) => {
                    tracing::error!(incident = %key, notifier = %n, event = event.as_str(), error = %e,
                        "alert delivery failed; trying again at the next evaluation");
                    outcome.failed.push((key, n, event));
                }
            }
        }
        Ok(outcome)
    }

    /// Evaluates every `evaluate_every` until `stop` (returns at once without rules).
    pub async fn run(mut self, stop: CancellationToken) {
        if self.config.rules.is_empty() {
            return;
        }
        let every = self.config.evaluate_every;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = self.evaluate(crate::outbox::now_ms()) => match r {
                    Ok(o) if !o.opened.is_empty() || !o.resolved.is_empty() => tracing::info!(
                        firing = o.firing.len(),
                        opened = ?o.opened,
                        resolved = ?o.resolved,
                        "alerts evaluated"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "alert evaluation failed"),
                },
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
