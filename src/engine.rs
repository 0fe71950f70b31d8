//! The reconcile pass: read → canonical model → plan per target → durable outbox → push →
//! read back → report. `omnisync run`, `omnisync reconcile` and `omnisync demo` all go
//! through [`Engine::reconcile`]; there is no other path to a channel.
//!
//! Reads are paged (or batched by SKU for a scoped pass) and run concurrently per
//! connector; planning is the pure [`crate::planner`]; every correction is written to the
//! outbox before it is pushed; pushes are batched to each API's limit; after pushing, the
//! touched SKUs are read back to confirm (or to mark a `write_no_op`), and compare-and-set
//! refusals are re-planned from the fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use omnisync_sdk::retry::retry;
use omnisync_sdk::{Capabilities, Change, Connector, ConnectorError, Record};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, ConnectorConfig, Role};
use crate::outbox::{self, DrainStats, Lane, now_ms};
use crate::planner::stock::StockMode;
use crate::planner::{
    self, CanonicalItem, Cause, ChannelPlan, Field, Observed, PlanContext, Planned, PrevState,
    StateKey, TargetSpec,
};
use crate::report::{ChannelReport, DriftCounts, RunReport, WouldPush};
use crate::store::{Store, WriteTx};

/// Above this many touched SKUs, a channel is read back in full rather than by SKU.
const READ_BACK_BY_SKU_MAX: usize = 1000;

/// What a pass covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this target channel (sources are always read).
    pub channel: Option<String>,
    /// Only these SKUs (read with `read_skus` instead of a full read).
    pub skus: Option<Vec<String>>,
    /// With `skus`, a pass on what webhooks named: connector id → the SKUs its deliveries
    /// named. Sources are read for every SKU; a target re-reads only the SKUs it named itself
    /// (and any it has no stored listing for), and the others are planned from what it
    /// last showed (`bindings`), which its own webhooks and the scheduled full reconcile keep
    /// honest. Stock writes stay compare-and-set where the API has it, so a stale stored
    /// quantity is refused, re-read and planned again. `None`: every target re-reads every
    /// SKU.
    pub named_by: Option<BTreeMap<String, BTreeSet<String>>>,
    /// Queue the corrections and return without pushing: what a webhook pass does. Each
    /// channel's queue is then pushed on its own ([`Engine::push_queued`]), so a slow or
    /// throttled channel holds back neither the others nor the next pass, and writes the
    /// API accepted are taken as shown and read back later ([`Engine::read_back_pending`]).
    pub enqueue_only: bool,
    /// Plan and report, push nothing, store nothing but the run.
    pub dry_run: bool,
}

impl Scope {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.channel {
            parts.push(format!("channel={c}"));
        }
        if let Some(s) = &self.skus {
            parts.push(format!("skus={}", s.len()));
        }
        if self.named_by.is_some() {
            parts.push(
                if self.enqueue_only {
                    "webhook"
                } else {
                    "read-back"
                }
                .into(),
            );
        }
        if parts.is_empty() {
            "full".into()
        } else {
            parts.join(" ")
        }
    }
}

/// A configured connector and what it can do.
struct Channel {
    cfg: ConnectorConfig,
    connector: Arc<dyn Connector>,
    caps: Capabilities,
    /// Change notices (`notify_secret`), for a connector without webhooks of its own.
    notice: Option<omnisync_sdk::notice::ChangeNotice>,
}

/// The reconcile engine.
pub struct Engine {
    config: Arc<Config>,
    store: Store,
    channels: Vec<Channel>,
    gate: tokio::sync::Mutex<()>,
    /// One mutex per push lane of a target channel ([`Engine::push_lanes`]): two drains
    /// of one lane never run at once.
    lanes: HashMap<(String, Lane), tokio::sync::Mutex<()>>,
    /// One mutex per target channel around [`Store::take_as_shown`], a read-modify-write
    /// of the stored listings that two lanes of the channel would otherwise interleave
    /// (one lane's value lost to the other's older copy).
    listings: HashMap<String, tokio::sync::Mutex<()>>,
}

/// What [`Engine::push_queued`] did on one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Corrections sent.
    pub sent: u64,
    /// Applied, and taken as shown until read back.
    pub applied: u64,
    /// SKUs to read again from the channel: compare-and-set refusals (the channel moved)
    /// and created listings (their ids are known only from a read).
    pub reread: Vec<String>,
}

impl Pushed {
    /// Adds what another lane of the same channel pushed.
    fn merge(&mut self, other: Pushed) {
        self.sent += other.sent;
        self.applied += other.applied;
        self.reread.extend(other.reread);
        self.reread.sort();
        self.reread.dedup();
    }
}

/// A target's read, bound to canonical items.
struct Bound {
    observed: HashMap<String, Observed>,
    orphans: Vec<(String, Option<String>, String)>,
}

/// One target channel ready to be planned.
struct Prepared {
    /// Records read from it in this pass.
    records_read: u64,
    /// What it shows, bound to canonical SKUs.
    bound: Bound,
    /// The SKUs read now, when a webhook pass took the rest from the store (`None`: all).
    fresh: Option<HashSet<String>>,
    /// Its state after the previous pass.
    prev: HashMap<StateKey, PrevState>,
    /// Values dead-lettered on it (not queued again).
    dead: HashSet<(StateKey, String)>,
}

impl Prepared {
    fn is_fresh(&self, sku: &str) -> bool {
        self.fresh.as_ref().is_none_or(|f| f.contains(sku))
    }
}

impl Engine {
    /// Builds every configured connector (resolving secrets; no network I/O) and checks
    /// that each can play the roles the config gives it.
    pub fn new(config: Config, store: Store) -> anyhow::Result<Engine> {
        let mut connectors = Vec::new();
        for c in &config.connectors {
            let conn = crate::registry::build(&c.kind, &c.settings)
                .with_context(|| format!("connector {:?} ({})", c.id, c.kind))?;
            connectors.push((c.id.clone(), conn));
        }
        Self::with_connectors(config, store, connectors)
    }

    /// Like [`Engine::new`] with connectors built elsewhere (tests wrap them).
    pub fn with_connectors(
        config: Config,
        store: Store,
        connectors: Vec<(String, Arc<dyn Connector>)>,
    ) -> anyhow::Result<Engine> {
        let mut by_id: HashMap<String, Arc<dyn Connector>> = connectors.into_iter().collect();
        let mut channels = Vec::new();
        for cfg in &config.connectors {
            let connector = by_id
                .remove(&cfg.id)
                .with_context(|| format!("no connector built for {:?}", cfg.id))?;
            let caps = connector.capabilities();
            let k = format!("{}: connectors.{}", config.file.display(), cfg.id);
            if cfg.price == Role::Target && !caps.writes_price {
                bail!("{k}.price: a {} connector cannot write prices", cfg.kind);
            }
            if cfg.stock == Role::Target && !caps.writes_stock {
                bail!("{k}.stock: a {} connector cannot write stock", cfg.kind);
            }
            if let Some(rules) = &cfg.stock_rules
                && matches!(rules.mode, StockMode::PerLocation(_))
                && !caps.stock_per_location
            {
                bail!(
                    "{k}.locations: a {} connector holds one quantity per listing; use stock_from",
                    cfg.kind
                );
            }
            let notice = match &cfg.notify_secret {
                None => None,
                Some(_) if connector.webhooks().is_some() => bail!(
                    "{k}.notify_secret: a {} connector takes its own signed webhooks at \
                     /webhooks/{}; change notices are for systems that send none",
                    cfg.kind,
                    cfg.id
                ),
                Some(secret) => Some(omnisync_sdk::notice::ChangeNotice::new(
                    secret
                        .resolve()
                        .with_context(|| format!("{k}.notify_secret"))?,
                )),
            };
            channels.push(Channel {
                cfg: cfg.clone(),
                connector,
                caps,
                notice,
            });
        }
        let lanes = channels
            .iter()
            .flat_map(|ch| {
                Self::lanes_of(ch)
                    .iter()
                    .map(|&lane| ((ch.cfg.id.clone(), lane), tokio::sync::Mutex::new(())))
            })
            .collect();
        let listings = channels
            .iter()
            .map(|ch| (ch.cfg.id.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Ok(Engine {
            config: Arc::new(config),
            store,
            channels,
            gate: tokio::sync::Mutex::new(()),
            lanes,
            listings,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configured connector with this id (the HTTP server hands webhooks to it).
    pub fn connector(&self, id: &str) -> Option<&Arc<dyn Connector>> {
        self.channels
            .iter()
            .find(|c| c.cfg.id == id)
            .map(|c| &c.connector)
    }

    /// What checks and parses webhooks for connector `id`: its own handler, or change
    /// notices when it has none and `notify_secret` is set.
    pub fn webhooks(&self, id: &str) -> Option<&dyn omnisync_sdk::webhook::WebhookHandler> {
        let ch = self.channels.iter().find(|c| c.cfg.id == id)?;
        ch.connector.webhooks().or_else(|| {
            ch.notice
                .as_ref()
                .map(|n| n as &dyn omnisync_sdk::webhook::WebhookHandler)
        })
    }

    /// Runs every connector's healthcheck.
    pub async fn healthcheck(&self) -> Vec<(String, Result<(), ConnectorError>)> {
        let checks = self.channels.iter().map(|c| async move {
            let id: Arc<str> = Arc::from(c.cfg.id.as_str());
            let result = omnisync_sdk::telemetry::scope(id, c.connector.healthcheck()).await;
            if let Err(e) = &result {
                crate::metrics::connector_error(&c.cfg.id, e.kind);
            }
            (c.cfg.id.clone(), result)
        });
        futures::future::join_all(checks).await
    }

    fn retry_policy(&self) -> omnisync_sdk::retry::RetryPolicy {
        outbox::policy(&self.config.daemon.outbox)
    }

    /// Reads a channel (all of it, or these SKUs), with retries; API calls are counted
    /// under the channel's id, and the outcome recorded in the metrics.
    async fn read(
        &self,
        ch: &Channel,
        skus: Option<&[String]>,
    ) -> Result<Vec<Record>, ConnectorError> {
        let id: Arc<str> = Arc::from(ch.cfg.id.as_str());
        let result = omnisync_sdk::telemetry::scope(id, self.read_unscoped(ch, skus)).await;
        match &result {
            Ok(_) => crate::metrics::read_ok(&ch.cfg.id),
            Err(e) => crate::metrics::connector_error(&ch.cfg.id, e.kind),
        }
        result
    }

    async fn read_unscoped(
        &self,
        ch: &Channel,
        skus: Option<&[String]>,
    ) -> Result<Vec<Record>, ConnectorError> {
        let policy = self.retry_policy();
        let mut out = Vec::new();
        match skus {
            None => {
                let mut cursor: Option<String> = None;
                loop {
                    let page = retry(policy, || ch.connector.read_page(cursor.clone())).await?;
                    out.extend(page.records);
                    match page.next {
                        Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                        Some(next) => {
                            return Err(ConnectorError::protocol(
                                "reading pages",
                                format!("the API returned the same cursor twice ({next})"),
                            ));
                        }
                        None => break,
                    }
                }
            }
            Some(skus) => {
                for chunk in skus.chunks(ch.caps.max_read_batch.max(1)) {
                    out.extend(retry(policy, || ch.connector.read_skus(chunk)).await?);
                }
            }
        }
        Ok(out)
    }

    /// Reads these SKUs back after a push: by SKU for a few, with one full (paged or bulk)
    /// read for many, which costs far fewer calls than thousands of targeted ones.
    async fn read_back(
        &self,
        ch: &Channel,
        skus: &[String],
    ) -> Result<Vec<Record>, ConnectorError> {
        if skus.len() <= READ_BACK_BY_SKU_MAX {
            return self.read(ch, Some(skus)).await;
        }
        let wanted: HashSet<&str> = skus.iter().map(String::as_str).collect();
        Ok(self
            .read(ch, None)
            .await?
            .into_iter()
            .filter(|r| r.sku.as_deref().is_some_and(|s| wanted.contains(s)))
            .collect())
    }

    /// Builds canonical items from the sources' records. Stock at a location code that no
    /// canonical location maps to is not counted (fail closed) and reported.
    fn canonical(&self, reads: &HashMap<String, Vec<Record>>) -> (Vec<CanonicalItem>, Vec<String>) {
        let mut items: BTreeMap<String, CanonicalItem> = BTreeMap::new();
        let mut problems = Vec::new();
        for ch in &self.channels {
            let is_price = ch.cfg.price == Role::Source;
            let is_stock = ch.cfg.stock == Role::Source;
            if !is_price && !is_stock {
                continue;
            }
            let Some(records) = reads.get(&ch.cfg.id) else {
                continue;
            };
            let by_code: HashMap<&str, &str> = ch
                .cfg
                .source_locations
                .iter()
                .map(|(canon, code)| (code.as_str(), canon.as_str()))
                .collect();
            let mut unmapped: BTreeSet<String> = BTreeSet::new();
            let mut no_sku = 0u64;
            for rec in records {
                let Some(sku) = rec.sku.as_deref().filter(|s| !s.is_empty()) else {
                    no_sku += 1;
                    continue;
                };
                let item = items
                    .entry(sku.to_string())
                    .or_insert_with(|| CanonicalItem {
                        sku: sku.to_string(),
                        title: None,
                        price: None,
                        stock: BTreeMap::new(),
                    });
                if item.title.is_none() {
                    item.title = rec.title.clone();
                }
                if is_price {
                    item.price = rec.offer.map(|o| o.price);
                }
                if is_stock {
                    for level in &rec.stock {
                        match by_code.get(level.location.as_str()) {
                            Some(canon) => {
                                item.stock
                                    .insert((*canon).to_string(), level.available.max(0));
                            }
                            None => {
                                unmapped.insert(level.location.clone());
                            }
                        }
                    }
                }
            }
            if !unmapped.is_empty() {
                problems.push(format!(
                    "{} reports stock at location codes {:?} that no canonical location maps to: not counted",
                    ch.cfg.id, unmapped
                ));
            }
            if no_sku > 0 {
                problems.push(format!(
                    "{} has {no_sku} records without a SKU: ignored",
                    ch.cfg.id
                ));
            }
        }
        (items.into_values().collect(), problems)
    }

    fn bind(records: Vec<Record>, catalog: &HashSet<&str>) -> Bound {
        let mut observed: HashMap<String, Observed> = HashMap::with_capacity(records.len());
        let mut orphans = Vec::new();
        for rec in records {
            let sku = rec.sku.clone().filter(|s| !s.is_empty());
            match sku {
                None => orphans.push((rec.external_id, None, "listing has no SKU".to_string())),
                Some(s) if !catalog.contains(s.as_str()) => orphans.push((
                    rec.external_id,
                    Some(s),
                    "SKU is not in the canonical catalog".to_string(),
                )),
                Some(s) if observed.contains_key(&s) => orphans.push((
                    rec.external_id,
                    Some(s),
                    "a second listing with the same SKU".to_string(),
                )),
                Some(s) => {
                    observed.insert(
                        s,
                        Observed {
                            external_id: rec.external_id,
                            refs: rec.refs,
                            offer: rec.offer,
                            stock: rec
                                .stock
                                .into_iter()
                                .map(|l| (l.location, l.available))
                                .collect(),
                        },
                    );
                }
            }
        }
        Bound { observed, orphans }
    }

    fn spec(ch: &Channel) -> TargetSpec {
        TargetSpec {
            id: ch.cfg.id.clone(),
            price: ch.cfg.price_rules.clone(),
            stock: ch.cfg.stock_rules.clone(),
            sale_field: ch.caps.sale_price,
            creates_listings: ch.caps.creates_listings,
            compare_and_set: ch.caps.compare_and_set,
        }
    }

    fn is_target(ch: &Channel) -> bool {
        ch.cfg.price == Role::Target || ch.cfg.stock == Role::Target
    }

    fn is_source(ch: &Channel) -> bool {
        ch.cfg.price == Role::Source || ch.cfg.stock == Role::Source
    }

    /// Runs one reconcile pass over `scope` and records it. Passes never overlap.
    pub async fn reconcile(&self, scope: &Scope) -> anyhow::Result<RunReport> {
        let _one_at_a_time = self.gate.lock().await;
        let started = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let run_id = self
            .store
            .start_run(&scope.describe(), scope.dry_run, now_ms())
            .await?;
        if let Some(c) = &scope.channel
            && !self
                .channels
                .iter()
                .any(|ch| &ch.cfg.id == c && Self::is_target(ch))
        {
            bail!("no target channel {c:?} in {}", self.config.file.display());
        }
        let in_scope = |ch: &Channel| {
            let is_source = Self::is_source(ch);
            is_source
                || (Self::is_target(ch) && scope.channel.as_ref().is_none_or(|c| c == &ch.cfg.id))
        };
        let skus = scope.skus.as_deref();
        // A webhook pass: what each target re-reads, and what it is planned from instead.
        let mut rereads: HashMap<String, Vec<String>> = HashMap::new();
        let mut stored: HashMap<String, HashMap<String, Observed>> = HashMap::new();
        if let (Some(named_by), Some(skus)) = (&scope.named_by, skus) {
            let no_names = BTreeSet::new();
            let targets: Vec<&Channel> = self
                .channels
                .iter()
                .filter(|ch| in_scope(ch) && !Self::is_source(ch))
                .collect();
            let shown = futures::future::try_join_all(
                targets
                    .iter()
                    .map(|ch| self.store.load_observed(&ch.cfg.id, skus)),
            )
            .await?;
            for (ch, mut known) in targets.into_iter().zip(shown) {
                let named = named_by.get(&ch.cfg.id).unwrap_or(&no_names);
                let reread: Vec<String> = skus
                    .iter()
                    .filter(|s| named.contains(*s) || !known.contains_key(*s))
                    .cloned()
                    .collect();
                for s in &reread {
                    known.remove(s);
                }
                stored.insert(ch.cfg.id.clone(), known);
                rereads.insert(ch.cfg.id.clone(), reread);
            }
        }
        let reads =
            futures::future::join_all(self.channels.iter().filter(|ch| in_scope(ch)).map(|ch| {
                let these = rereads.get(&ch.cfg.id).map(Vec::as_slice);
                async move {
                    let result = match these {
                        Some([]) => Ok(Vec::new()),
                        Some(these) => self.read(ch, Some(these)).await,
                        None => self.read(ch, skus).await,
                    };
                    (ch.cfg.id.clone(), result)
                }
            }))
            .await;
        let read_ms = clock.elapsed().as_millis() as u64;
        let mut records: HashMap<String, Vec<Record>> = HashMap::new();
        let mut read_errors: HashMap<String, String> = HashMap::new();
        for (id, r) in reads {
            match r {
                Ok(recs) => {
                    records.insert(id, recs);
                }
                Err(e) => {
                    tracing::error!(channel = %id, error = %e, "read failed");
                    read_errors.insert(id, e.to_string());
                }
            }
        }

        let mut report = RunReport {
            run_id,
            scope: scope.describe(),
            dry_run: scope.dry_run,
            started_at: started.format(&Rfc3339).unwrap_or_default(),
            status: "ok".into(),
            ..Default::default()
        };
        let source_failed: Vec<&String> = self
            .channels
            .iter()
            .filter(|ch| Self::is_source(ch))
            .filter_map(|ch| read_errors.get_key_value(&ch.cfg.id).map(|(k, _)| k))
            .collect();
        if !source_failed.is_empty() {
            // Without the truth nothing can be planned; targets are left alone.
            report.status = "failed".into();
            report.problems.push(format!(
                "source read failed ({}): no channel was reconciled",
                source_failed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }

        let (items, problems) = self.canonical(&records);
        report.problems.extend(problems);
        let catalog: HashSet<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        let now = now_ms();
        // Orders in flight: release what the source booked, keep the rest off the channels.
        let totals: HashMap<String, i64> = items
            .iter()
            .map(|i| (i.sku.clone(), i.stock.values().sum()))
            .collect();
        let mut flight = if report.status == "ok" {
            let (flight, counts) =
                crate::reservations::in_flight(&self.store, skus, &totals, now, !scope.dry_run)
                    .await?;
            report.reservations = counts;
            flight
        } else {
            HashMap::new()
        };

        // What each target showed (read now, or as stored for a webhook pass), with the
        // state it was planned from before.
        let mut prepared: HashMap<String, Prepared> = HashMap::new();
        if report.status == "ok" {
            let targets: Vec<&Channel> = self
                .channels
                .iter()
                .filter(|ch| {
                    in_scope(ch) && Self::is_target(ch) && !read_errors.contains_key(&ch.cfg.id)
                })
                .collect();
            // Each target's state and dead letters, read concurrently.
            let t = Instant::now();
            let loaded = futures::future::try_join_all(targets.iter().map(|ch| async move {
                tokio::try_join!(
                    self.store.load_prev(&ch.cfg.id, skus),
                    self.store.dead_lettered(&ch.cfg.id)
                )
            }))
            .await?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "load_prev");
            for (ch, (prev, dead)) in targets.into_iter().zip(loaded) {
                let recs = records.remove(&ch.cfg.id).unwrap_or_default();
                let records_read = recs.len() as u64;
                let mut bound = Self::bind(recs, &catalog);
                let fresh: Option<HashSet<String>> =
                    rereads.remove(&ch.cfg.id).map(|v| v.into_iter().collect());
                if let Some(known) = stored.remove(&ch.cfg.id) {
                    for (sku, obs) in known {
                        if catalog.contains(sku.as_str()) {
                            bound.observed.entry(sku).or_insert(obs);
                        }
                    }
                }
                let p = Prepared {
                    records_read,
                    bound,
                    fresh,
                    prev,
                    dead,
                };
                prepared.insert(ch.cfg.id.clone(), p);
            }
            // Stock a channel stopped showing on its own is a sale in flight: reserve it
            // before planning, so every other channel drops in this very pass.
            let expires = now + self.config.daemon.reservation_timeout_secs as i64 * 1000;
            let sensed = self.unexplained_drops(&prepared, &items, &flight, started);
            for (channel, drops) in sensed {
                if !scope.dry_run {
                    self.store
                        .reserve_drops(&channel, run_id, &drops, &totals, now, expires)
                        .await?;
                }
                tracing::info!(
                    channel = %channel,
                    skus = drops.len(),
                    units = drops.values().sum::<i64>(),
                    "stock fell on a channel without a correction: reserved as sales in flight"
                );
                for (sku, units) in drops {
                    *flight
                        .entry(sku)
                        .or_default()
                        .entry(String::new())
                        .or_default() += units;
                    report.reservations.open += 1;
                    report.reservations.from_drops += 1;
                }
            }
        }
        let ctx = PlanContext {
            now: started,
            source: &self.config.source_pricing,
            fx: &self.config.fx,
            promotions: &self.config.promotions,
            in_flight: &flight,
        };

        // What the pass learnt is written in one transaction: a pass for a few SKUs is a
        // handful of statements in one turn of the store's writers instead of a dozen
        // transactions queueing behind the webhook inbox. A full pass commits per channel,
        // so deliveries are stored between its (large) writes.
        let mut pass_tx: Option<WriteTx> = None;
        if !scope.dry_run && report.status == "ok" {
            let t = Instant::now();
            let tx = pass_tx.insert(self.store.begin_write().await.context("saving a pass")?);
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "write turn");
            self.store.save_items_in(tx, &items, now).await?;
            if skus.is_none() {
                commit(pass_tx.take()).await?;
            }
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "save_items");
        }

        // Plan and queue each target.
        for ch in &self.channels {
            let is_source = Self::is_source(ch);
            let mut cr = ChannelReport {
                id: ch.cfg.id.clone(),
                kind: ch.cfg.kind.clone(),
                role: format!("{}/{}", role_name(ch.cfg.price), role_name(ch.cfg.stock)),
                consistency: 1.0,
                ..Default::default()
            };
            if is_source && !Self::is_target(ch) {
                cr.role = "source".into();
                cr.records_read = records.get(&ch.cfg.id).map_or(0, |r| r.len() as u64);
                cr.items_checked = cr.records_read;
                cr.in_sync = cr.records_read;
                cr.error = read_errors.get(&ch.cfg.id).cloned();
                report.channels.push(cr);
                continue;
            }
            if !in_scope(ch) || !Self::is_target(ch) {
                continue;
            }
            if let Some(e) = read_errors.get(&ch.cfg.id) {
                cr.error = Some(e.clone());
                cr.consistency = 0.0;
                report.channels.push(cr);
                continue;
            }
            if report.status != "ok" {
                cr.error = Some("not reconciled: the source could not be read".into());
                cr.consistency = 0.0;
                report.channels.push(cr);
                continue;
            }
            let Some(Prepared {
                records_read,
                bound,
                fresh,
                prev,
                dead,
            }) = prepared.remove(&ch.cfg.id)
            else {
                continue;
            };
            cr.records_read = records_read;
            // What was read now is saved below; what a webhook pass took from the store is not.
            let t = Instant::now();
            let plan = planner::plan_channel(&Self::spec(ch), &ctx, &items, &bound.observed, &prev);
            tracing::debug!(ms = t.elapsed().as_millis() as u64, channel = %ch.cfg.id, "plan");
            cr.items_checked = plan.items_checked;
            cr.in_sync = plan.items_in_sync;
            // Writes taken as shown by an earlier webhook pass, now seen by a read.
            let is_fresh = |sku: &str| fresh.as_ref().is_none_or(|f| f.contains(sku));
            cr.corrections.confirmed += plan
                .rows
                .iter()
                .filter(|r| {
                    r.in_sync
                        && prev.get(&r.key).is_some_and(|p| p.unverified)
                        && is_fresh(&r.key.sku)
                })
                .count() as u64;
            cr.consistency = ratio(plan.items_in_sync, plan.items_checked);
            cr.plan_errors = plan.errors.len() as u64;
            for (sku, e) in plan.errors.iter().take(20) {
                report.problems.push(format!("{}: {sku}: {e}", ch.cfg.id));
            }
            cr.drift = drift_counts(&plan, bound.orphans.len() as u64);

            let queue: Vec<(Planned, String, Option<String>)> = plan
                .corrections
                .iter()
                .filter(|p| !dead.contains(&(p.key.clone(), p.value.clone())))
                .map(|p| {
                    let key = idempotency_key(&ch.cfg.id, p);
                    let hold = hold_reason(ch, p, prev.get(&p.key), bound.observed.get(&p.key.sku));
                    (p.clone(), key, hold)
                })
                .collect();
            if scope.dry_run {
                let observed_of: HashMap<&StateKey, Option<&String>> = plan
                    .rows
                    .iter()
                    .map(|r| (&r.key, r.observed.as_ref()))
                    .collect();
                cr.would_push = queue
                    .iter()
                    .map(|(p, _, hold)| WouldPush {
                        sku: p.key.sku.clone(),
                        field: p.key.field.as_str().into(),
                        location: p.key.location.clone(),
                        observed: observed_of.get(&p.key).copied().flatten().cloned(),
                        desired: p.value.clone(),
                        held: hold.clone(),
                    })
                    .collect();
                cr.corrections.held = queue.iter().filter(|q| q.2.is_some()).count() as u64;
            } else {
                let t = Instant::now();
                let tx = match &mut pass_tx {
                    Some(tx) => tx,
                    None => {
                        pass_tx.insert(self.store.begin_write().await.context("saving a pass")?)
                    }
                };
                let id = ch.cfg.id.as_str();
                self.store
                    .record_observations_in(tx, id, run_id, &plan.rows, &prev, now)
                    .await?;
                self.store
                    .save_state_in(tx, id, &plan.rows, &prev, now)
                    .await?;
                tracing::debug!(
                    ms = t.elapsed().as_millis() as u64,
                    rows = plan.rows.len(),
                    "save_state"
                );
                // Listings whose every value was and is in sync are stored already.
                let changed: HashSet<&str> = plan
                    .rows
                    .iter()
                    .filter(|r| {
                        prev.get(&r.key)
                            .is_none_or(|p| !(p.in_sync && r.in_sync && p.desired == r.desired))
                    })
                    .map(|r| r.key.sku.as_str())
                    .collect();
                let to_save: HashMap<String, Observed> = bound
                    .observed
                    .iter()
                    .filter(|(sku, _)| changed.contains(sku.as_str()) && is_fresh(sku))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let t = Instant::now();
                self.store.save_bindings_in(tx, id, &to_save, now).await?;
                tracing::debug!(ms = t.elapsed().as_millis() as u64, "save_bindings");
                // What was read is seen: no write is waiting for a read-back there any more.
                let seen: Option<Vec<String>> = fresh.as_ref().map(|f| f.iter().cloned().collect());
                self.store
                    .clear_unverified_in(tx, id, seen.as_deref().or(skus))
                    .await?;

                self.store
                    .save_orphans_in(tx, id, &bound.orphans, skus.is_none(), now)
                    .await?;
                let (queued, held) = self.store.enqueue_in(tx, id, &queue, run_id, now).await?;
                cr.corrections.queued = queued;
                cr.corrections.held = held;
                if skus.is_none() {
                    commit(pass_tx.take()).await?;
                }
            }
            report.channels.push(cr);
        }

        let t = Instant::now();
        commit(pass_tx).await?;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "commit");
        let plan_ms = clock.elapsed().as_millis() as u64 - read_ms;
        if !scope.dry_run && !scope.enqueue_only && report.status == "ok" {
            self.push_and_verify(run_id, &items, &ctx, &mut report)
                .await?;
        }
        let push_ms = clock.elapsed().as_millis() as u64 - read_ms - plan_ms;
        report.phase_ms = BTreeMap::from([
            ("read".to_string(), read_ms),
            ("plan".to_string(), plan_ms),
            ("push".to_string(), push_ms),
        ]);
        tracing::info!(
            run = run_id,
            scope = %report.scope,
            read_ms,
            plan_ms,
            push_ms,
            items = items.len(),
            "pass finished"
        );

        if !scope.dry_run {
            crate::views::record_convergence(&self.store, &mut report, started).await?;
        }
        let finished = OffsetDateTime::now_utc();
        report.finished_at = finished.format(&Rfc3339).unwrap_or_default();
        report.duration_ms = clock.elapsed().as_millis() as u64;
        let json = serde_json::to_string(&report)?;
        self.store
            .finish_run(run_id, &report.status, &json, now_ms())
            .await?;
        let kind = match (&scope.channel, &scope.skus) {
            (_, Some(_)) => "skus",
            (Some(_), None) => "channel",
            (None, None) => "full",
        };
        crate::metrics::record_pass(kind, &report, clock.elapsed());
        Ok(report)
    }

    /// Per target channel, the stock it stopped showing on its own
    /// ([`planner::unexplained_drops`]), given the units already in flight.
    fn unexplained_drops(
        &self,
        prepared: &HashMap<String, Prepared>,
        items: &[CanonicalItem],
        flight: &HashMap<String, BTreeMap<String, i64>>,
        now: OffsetDateTime,
    ) -> Vec<(String, BTreeMap<String, i64>)> {
        let ctx = PlanContext {
            now,
            source: &self.config.source_pricing,
            fx: &self.config.fx,
            promotions: &self.config.promotions,
            in_flight: flight,
        };
        self.channels
            .iter()
            .filter_map(|ch| {
                let p = prepared.get(&ch.cfg.id)?;
                let drops = planner::unexplained_drops(
                    &Self::spec(ch),
                    &ctx,
                    items,
                    &p.bound.observed,
                    &p.prev,
                    |sku| p.is_fresh(sku),
                );
                (!drops.is_empty()).then(|| (ch.cfg.id.clone(), drops))
            })
            .collect()
    }

    /// Pushes what is due on every target in the report, reads the touched SKUs back,
    /// confirms or marks `write_no_op`, and re-plans compare-and-set refusals (up to three
    /// rounds).
    async fn push_and_verify(
        &self,
        run_id: i64,
        items: &[CanonicalItem],
        ctx: &PlanContext<'_>,
        report: &mut RunReport,
    ) -> anyhow::Result<()> {
        // A channel whose API asks for pacing keeps its queue for its pusher (or, once the
        // wait is over, the retry loop): a pass must not spend the budget pacing saves.
        let targets: Vec<&Channel> = self
            .channels
            .iter()
            .filter(|ch| {
                Self::is_target(ch)
                    && ch.connector.pacing().is_none()
                    && report
                        .channels
                        .iter()
                        .any(|c| c.id == ch.cfg.id && c.error.is_none())
            })
            .collect();
        let item_by_sku: HashMap<&str, &CanonicalItem> =
            items.iter().map(|i| (i.sku.as_str(), i)).collect();
        for round in 0..3 {
            let drains = futures::future::join_all(targets.iter().flat_map(|ch| {
                Self::lanes_of(ch).iter().map(move |&lane| async move {
                    let _lane = self.lane(&ch.cfg.id, lane).await;
                    let stats = outbox::drain(
                        &self.store,
                        &ch.cfg.id,
                        lane,
                        &ch.connector,
                        run_id,
                        &self.config.daemon.outbox,
                        outbox::Claim::Due,
                    )
                    .await;
                    (*ch, stats)
                })
            }))
            .await;
            // One entry per channel, its lanes' drains added up.
            let mut by_channel: Vec<(&Channel, DrainStats)> = Vec::with_capacity(targets.len());
            for (ch, stats) in drains {
                let stats = stats?;
                match by_channel.iter_mut().find(|(c, _)| c.cfg.id == ch.cfg.id) {
                    Some((_, all)) => all.merge(stats),
                    None => by_channel.push((ch, stats)),
                }
            }
            let mut any_stale = false;
            for (ch, stats) in by_channel {
                let cr = channel_report(report, &ch.cfg.id);
                cr.corrections.sent += stats.sent;
                cr.corrections.failed += stats.dead;
                cr.corrections.retrying = stats.rescheduled;
                if stats.touched.is_empty() {
                    continue;
                }
                // Read back what was touched and plan it again.
                let touched: Vec<String> = stats.touched.iter().cloned().collect();
                let recs = match self.read_back(ch, &touched).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(channel = %ch.cfg.id, error = %e, "read-back failed");
                        continue;
                    }
                };
                let subset: Vec<CanonicalItem> = touched
                    .iter()
                    .filter_map(|s| item_by_sku.get(s.as_str()).map(|i| (*i).clone()))
                    .collect();
                let catalog: HashSet<&str> = subset.iter().map(|i| i.sku.as_str()).collect();
                let bound = Self::bind(recs, &catalog);
                let prev = self.store.load_prev(&ch.cfg.id, Some(&touched)).await?;
                let mut plan =
                    planner::plan_channel(&Self::spec(ch), ctx, &subset, &bound.observed, &prev);
                let applied: HashSet<&StateKey> =
                    stats.applied_changes.iter().map(|(k, _, _)| k).collect();
                let stale: HashSet<&StateKey> = stats.stale_keys.iter().collect();
                let cr = channel_report(report, &ch.cfg.id);
                let mut no_op = 0u64;
                for row in &mut plan.rows {
                    if applied.contains(&row.key) {
                        if row.in_sync {
                            cr.corrections.confirmed += 1;
                        } else if prev.get(&row.key).is_some_and(|p| p.desired == row.desired) {
                            row.cause = Some(Cause::WriteNoOp);
                            no_op += 1;
                        }
                    }
                }
                if no_op > 0 {
                    tracing::warn!(channel = %ch.cfg.id, no_op, "API accepted writes that did not take effect");
                }
                let now = now_ms();
                self.store
                    .record_observations(&ch.cfg.id, run_id, &plan.rows, &prev, now)
                    .await?;
                self.store
                    .save_state(&ch.cfg.id, &plan.rows, &prev, now)
                    .await?;
                self.store
                    .save_bindings(&ch.cfg.id, &bound.observed, now)
                    .await?;
                self.store
                    .clear_unverified(&ch.cfg.id, Some(&touched))
                    .await?;
                let requeue: Vec<(Planned, String, Option<String>)> = plan
                    .corrections
                    .iter()
                    .filter(|p| stale.contains(&p.key))
                    .map(|p| (p.clone(), idempotency_key(&ch.cfg.id, p), None))
                    .collect();
                if !requeue.is_empty() {
                    any_stale = true;
                    let (queued, _) = self
                        .store
                        .enqueue(&ch.cfg.id, &requeue, run_id, now)
                        .await?;
                    cr.corrections.queued += queued;
                }
            }
            if !any_stale {
                break;
            }
            tracing::info!(round, "re-planned compare-and-set refusals; pushing again");
        }
        for ch in targets {
            let (queued, _) = self.store.outbox_depth(&ch.cfg.id).await?;
            let cr = channel_report(report, &ch.cfg.id);
            // What is still waiting (retries scheduled later) is reported as queued.
            cr.corrections.queued = queued;
        }
        Ok(())
    }

    async fn lane(&self, channel: &str, lane: Lane) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.lanes.get(&(channel.to_string(), lane)) {
            Some(lane) => Some(lane.lock().await),
            None => None,
        }
    }

    /// The lanes a channel's queue is pushed in: stock apart from the rest when the
    /// connector's calls for them do not hold each other up ([`Capabilities::stock_lane`]),
    /// otherwise one.
    fn lanes_of(ch: &Channel) -> &'static [Lane] {
        if ch.caps.stock_lane {
            &[Lane::Stock, Lane::Rest]
        } else {
            &[Lane::All]
        }
    }

    /// The lanes `channel`'s queue is pushed in, each by a drain of its own (empty for a
    /// channel that is not a target).
    pub fn push_lanes(&self, channel: &str) -> &'static [Lane] {
        self.channels
            .iter()
            .find(|c| c.cfg.id == channel && Self::is_target(c))
            .map_or(&[], Self::lanes_of)
    }

    /// The ids of the source channels.
    pub fn source_ids(&self) -> Vec<String> {
        self.ids(Self::is_source)
    }

    /// The ids of the target channels.
    pub fn target_ids(&self) -> Vec<String> {
        self.ids(Self::is_target)
    }

    fn ids(&self, keep: fn(&Channel) -> bool) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.cfg.id.clone())
            .collect()
    }

    /// Pushes what is due in one channel's queue, without a read-back: writes the API
    /// accepted are taken as shown ([`Store::take_as_shown`]: the stored listing gets the
    /// value, the difference closes, the value is marked for [`Engine::read_back_pending`]).
    /// Returns the SKUs the channel must be read again for (compare-and-set refusals,
    /// created listings); the caller runs a pass over them.
    /// Its lanes ([`Engine::push_lanes`]) are pushed concurrently.
    pub async fn push_queued(&self, channel: &str) -> anyhow::Result<Pushed> {
        let lanes = self.push_lanes(channel);
        if lanes.is_empty() {
            bail!("no target channel {channel:?}");
        }
        let pushes = futures::future::join_all(
            lanes
                .iter()
                .map(|&lane| self.push_claimed(channel, lane, outbox::Claim::Due, true)),
        )
        .await;
        let mut all = Pushed::default();
        for pushed in pushes {
            all.merge(pushed?);
        }
        Ok(all)
    }

    /// Like [`Engine::push_queued`], for one of the channel's lanes: what a channel's
    /// pusher for that lane does.
    pub async fn push_lane(&self, channel: &str, lane: Lane) -> anyhow::Result<Pushed> {
        self.push_claimed(channel, lane, outbox::Claim::Due, true)
            .await
    }

    /// Drains `claim` of one lane of a channel's queue and takes what was applied as
    /// shown. With `wait: false` a lane that is busy (its pusher or a pass is pushing) is
    /// skipped: that drain pushes what is due anyway.
    async fn push_claimed(
        &self,
        channel: &str,
        lane: Lane,
        claim: outbox::Claim,
        wait: bool,
    ) -> anyhow::Result<Pushed> {
        let Some(ch) = self
            .channels
            .iter()
            .find(|c| c.cfg.id == channel && Self::is_target(c))
        else {
            bail!("no target channel {channel:?}");
        };
        let stats = {
            let _lane = match self.lanes.get(&(channel.to_string(), lane)) {
                Some(mutex) if !wait => match mutex.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(_) => return Ok(Pushed::default()),
                },
                _ => self.lane(channel, lane).await,
            };
            outbox::drain(
                &self.store,
                channel,
                lane,
                &ch.connector,
                0,
                &self.config.daemon.outbox,
                claim,
            )
            .await?
        };
        let mut reread: BTreeSet<String> = stats.stale_keys.iter().map(|k| k.sku.clone()).collect();
        let mut taken = Vec::new();
        for (key, value, change) in stats.applied_changes {
            if matches!(change, Change::Create { .. }) {
                reread.insert(key.sku);
            } else {
                taken.push((key, value, change));
            }
        }
        if !taken.is_empty() {
            let _listings = match self.listings.get(channel) {
                Some(mutex) => Some(mutex.lock().await),
                None => None,
            };
            self.store.take_as_shown(channel, &taken, now_ms()).await?;
        }
        Ok(Pushed {
            sent: stats.sent,
            applied: stats.applied,
            reread: reread.into_iter().collect(),
        })
    }

    /// Reads back up to `limit` SKUs whose writes a webhook pass took as shown, on the
    /// channels they were written to, in one pass: confirmed when the channel shows them,
    /// `write_no_op` (and pushed again) when it does not. `None` when nothing waits.
    pub async fn read_back_pending(&self, limit: i64) -> anyhow::Result<Option<RunReport>> {
        let (by_channel, total) = self.store.unverified(limit).await?;
        if by_channel.is_empty() {
            return Ok(None);
        }
        let skus: BTreeSet<String> = by_channel.values().flatten().cloned().collect();
        tracing::info!(
            skus = skus.len(),
            waiting = total,
            "reading back writes taken as shown"
        );
        let scope = Scope {
            skus: Some(skus.into_iter().collect()),
            named_by: Some(
                by_channel
                    .into_iter()
                    .map(|(c, s)| (c, s.into_iter().collect()))
                    .collect(),
            ),
            ..Scope::default()
        };
        self.reconcile(&scope).await.map(Some)
    }

    /// Pushes what is due in every target's outbox and nobody else will push: retries
    /// scheduled earlier, approved corrections, what a stopped pusher left. Like
    /// [`Engine::push_queued`], accepted writes are taken as shown. Corrections queued less
    /// than a second (or the channel's `push_window_ms`) ago are left to the pass or pusher
    /// that queued them. Skips (returning 0) while a pass is running: the pass drains the
    /// outbox itself; a channel whose pusher is busy is skipped (it pushes what is due), and
    /// so is one whose API asks for pacing ([`Connector::pacing`]: its pusher waits for it).
    /// Compare-and-set refusals are left to the next pass.
    pub async fn drain_due(&self) -> anyhow::Result<u64> {
        const STRAGGLER_MS: u64 = 1000;
        let Ok(_idle) = self.gate.try_lock() else {
            return Ok(0);
        };
        let mut sent = 0;
        for ch in self
            .channels
            .iter()
            .filter(|c| Self::is_target(c) && c.connector.pacing().is_none())
        {
            let wait = ch.cfg.push_window_ms.max(STRAGGLER_MS) as i64;
            for &lane in Self::lanes_of(ch) {
                let claim = outbox::Claim::QueuedBefore(now_ms() - wait);
                sent += self
                    .push_claimed(&ch.cfg.id, lane, claim, false)
                    .await?
                    .sent;
            }
        }
        Ok(sent)
    }
}

fn channel_report<'a>(report: &'a mut RunReport, id: &str) -> &'a mut ChannelReport {
    let idx = report
        .channels
        .iter()
        .position(|c| c.id == id)
        .unwrap_or_else(|| {
            report.channels.push(ChannelReport {
                id: id.to_string(),
                ..Default::default()
            });
            report.channels.len() - 1
        });
    &mut report.channels[idx]
}

/// Commits a pass's write transaction, if one was begun.
async fn commit(tx: Option<WriteTx>) -> anyhow::Result<()> {
    if let Some(tx) = tx {
        tx.commit().await.context("saving a pass")?;
    }
    Ok(())
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Source => "source",
        Role::Target => "target",
        Role::Observer => "observer",
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

fn drift_counts(plan: &ChannelPlan, orphans: u64) -> DriftCounts {
    let mut d = DriftCounts {
        orphan: orphans,
        ..Default::default()
    };
    for r in plan.rows.iter().filter(|r| !r.in_sync) {
        match r.key.field {
            Field::Offer => d.price += 1,
            Field::Stock => d.stock += 1,
            Field::Listing => d.missing += 1,
        }
        let cause = r.cause.map_or("unknown", |c| c.as_str());
        *d.by_cause.entry(cause.to_string()).or_default() += 1;
    }
    if orphans > 0 {
        *d.by_cause.entry("mapping".into()).or_default() += orphans;
    }
    d
}

/// A deterministic key: the same desired value for the same target gives the same key.
pub fn idempotency_key(channel: &str, p: &Planned) -> String {
    let mut h = Sha256::new();
    for part in [
        channel,
        &p.key.sku,
        p.key.field.as_str(),
        &p.key.location,
        &p.value,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Why a correction should wait for an operator, if it should: a price to zero, or a move of
/// the *desired* price beyond the channel's bound since the previous pass (against what the
/// channel shows when there is no previous pass). Putting back a price someone mistyped in
/// the channel is not suspicious; a source that suddenly triples a price is.
fn hold_reason(
    ch: &Channel,
    p: &Planned,
    prev: Option<&PrevState>,
    observed: Option<&Observed>,
) -> Option<String> {
    let Change::Offer { offer } = &p.change else {
        return None;
    };
    let new = offer.effective();
    if new.minor <= 0 {
        return Some("price to zero".into());
    }
    let max = ch.cfg.guards.max_price_change_percent?;
    let old = match prev.and_then(|p| planner::decode_offer(&p.desired)) {
        Some(before) => before.effective(),
        None => observed?.offer?.effective(),
    };
    if old.currency != new.currency || old.minor <= 0 {
        return None;
    }
    let change = rust_decimal::Decimal::from((new.minor - old.minor).abs())
        * rust_decimal::Decimal::ONE_HUNDRED
        / rust_decimal::Decimal::from(old.minor);
    (change > max).then(|| {
        format!(
            "price change of {}% exceeds max_price_change_percent = {max}",
            change.round_dp(1)
        )
    })
}
