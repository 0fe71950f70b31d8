//! Rule evaluation, pure: the state of the world (a [`World`] of aggregates read from the
//! store, and the daemon's counters) and the time in, the set of firing incidents out.
//!
//! An incident is keyed by rule + channel (+ field), never by SKU, so a thousand drifting
//! prices on one channel are one incident carrying the count and a few example SKUs. The
//! store does the counting ([`crate::alerts::store`]: `COUNT`, `MIN`, `SUM` per channel and
//! field, and the few example SKUs with `ORDER BY … LIMIT`), so an evaluation gets a handful
//! of rows however many values are open. What it must count depends on the rules and the
//! time (a drift-age rule counts what opened at or before its cutoff): the alerter asks
//! [`drift_cutoffs`] and [`oversell_queries`] what to read, and [`evaluate`] finds the same
//! keys in the [`World`].

use std::collections::{BTreeMap, BTreeSet};

use crate::alerts::config::{Condition, Rule};

/// How many example SKUs an incident carries.
pub const EXAMPLES: usize = 5;

/// The open differences of one channel and field (`target_state` rows with `in_sync = 0`)
/// that opened at or before one cutoff, as counted by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftGroup {
    /// Connector id.
    pub channel: String,
    /// `offer`, `stock` or `listing`.
    pub field: String,
    /// How many (one per SKU and location).
    pub count: u64,
    /// When the oldest opened (ms).
    pub oldest: i64,
    /// Up to [`EXAMPLES`] distinct SKUs, oldest first (then by SKU). Read only for the
    /// channels and fields a drift-age rule watches; empty for the others.
    pub examples: Vec<String>,
}

/// What an oversell-risk rule asks of the store: the stock differences that opened at or
/// before `cutoff` (ms) where the channel shows at least `min_excess` units more than it
/// should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OversellQuery {
    /// Only differences open since at or before this (ms).
    pub cutoff: i64,
    /// Shown minus desired, at least.
    pub min_excess: i64,
}

/// The stock values of one channel that show more than is available, as counted by the
/// store for one [`OversellQuery`]. Values that are not whole numbers are not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversellGroup {
    /// Connector id.
    pub channel: String,
    /// How many values (one per SKU and location).
    pub count: u64,
    /// Units shown too many, summed over them.
    pub units: i64,
    /// Up to [`EXAMPLES`] distinct SKUs, largest excess first (then by SKU). Read only for the
    /// channels an oversell-risk rule watches; empty for the others.
    pub examples: Vec<String>,
}

/// SKU-level rows counted per channel (unresolved dead letters, held corrections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemGroup {
    /// Connector id.
    pub channel: String,
    /// How many rows.
    pub count: u64,
    /// Up to [`EXAMPLES`] distinct SKUs, oldest first (then by SKU). Read only where a rule
    /// watching the channel fires at this count; empty otherwise.
    pub examples: Vec<String>,
}

/// A connector whose latest runs failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// Start of the first run of the current run of failures (ms).
    pub since: i64,
    /// The latest error.
    pub error: String,
}

/// Everything the rules look at: aggregates, never one row per open value.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Open differences per channel and field, for each cutoff in [`drift_cutoffs`] (ms),
    /// every group with at least one difference at that cutoff. A drift-age rule whose
    /// cutoff is missing is not evaluated.
    pub drift: BTreeMap<i64, Vec<DriftGroup>>,
    /// Stock values showing too much, per channel, for each query in [`oversell_queries`]. An
    /// oversell-risk rule whose query is missing is not evaluated.
    pub oversell: BTreeMap<OversellQuery, Vec<OversellGroup>>,
    /// Unresolved dead letters per channel.
    pub dead_letters: Vec<ItemGroup>,
    /// Corrections held for approval per channel.
    pub held: Vec<ItemGroup>,
    /// Connectors whose latest runs failed, by id.
    pub failing: BTreeMap<String, Failing>,
    /// Webhook signature failures per minute since the previous evaluation; `None` when
    /// there is no previous sample yet (the rule is then not evaluated).
    pub webhook_failures_per_minute: Option<f64>,
}

/// The cutoff of an age threshold at `now` (ms): what opened at or before it is old enough.
fn cutoff(now: i64, older_than_minutes: u64) -> i64 {
    let minutes = i64::try_from(older_than_minutes).unwrap_or(i64::MAX);
    now.saturating_sub(minutes.saturating_mul(60_000))
}

/// The oversell query of a rule at `now`, if it is an oversell-risk rule.
fn oversell_query(rule: &Rule, now: i64) -> Option<OversellQuery> {
    match rule.condition {
        Condition::OversellRisk {
            min_excess,
            older_than_minutes,
        } => Some(OversellQuery {
            cutoff: cutoff(now, older_than_minutes),
            min_excess,
        }),
        _ => None,
    }
}

/// The cutoffs (ms) at which the drift-age rules count open differences at `now`.
pub fn drift_cutoffs(rules: &[Rule], now: i64) -> BTreeSet<i64> {
    rules
        .iter()
        .filter_map(|r| match r.condition {
            Condition::DriftAge {
                older_than_minutes, ..
            } => Some(cutoff(now, older_than_minutes)),
            _ => None,
        })
        .collect()
}

/// Whether a drift-age rule watches this channel and field (so its examples are worth
/// reading).
pub fn drift_watched(rules: &[Rule], channel: &str, field: &str) -> bool {
    rules.iter().any(|r| match &r.condition {
        Condition::DriftAge { field: f, .. } => {
            r.watches(channel) && f.is_none_or(|f| f.as_str() == field)
        }
        _ => false,
    })
}

/// What the oversell-risk rules ask of the store at `now`.
pub fn oversell_queries(rules: &[Rule], now: i64) -> BTreeSet<OversellQuery> {
    rules
        .iter()
        .filter_map(|r| oversell_query(r, now))
        .collect()
}

/// Whether an oversell-risk rule asking `query` at `now` watches this channel.
pub fn oversell_watched(rules: &[Rule], query: OversellQuery, now: i64, channel: &str) -> bool {
    rules
        .iter()
        .any(|r| oversell_query(r, now) == Some(query) && r.watches(channel))
}

/// Whether a dead-letter rule (`dead`) or a held rule (otherwise) watching this channel fires
/// at `count` rows (so the examples are worth reading).
pub fn items_fire(rules: &[Rule], dead: bool, channel: &str, count: u64) -> bool {
    rules.iter().any(|r| match r.condition {
        Condition::DeadLetters { at_least } if dead => r.watches(channel) && count >= at_least,
        Condition::Held { at_least } if !dead => r.watches(channel) && count >= at_least,
        _ => false,
    })
}

/// A firing incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// `rule[/channel[/field]]`.
    pub key: String,
    /// Rule name.
    pub rule: String,
    /// Rule kind.
    pub kind: String,
    /// The channel or connector, if the incident is about one.
    pub channel: Option<String>,
    /// The field, if the incident is about one.
    pub field: Option<String>,
    /// How many rows (values, letters, corrections, failures per minute) make it fire.
    pub count: u64,
    /// A few SKUs, oldest first.
    pub examples: Vec<String>,
    /// One line for people.
    pub summary: String,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Firing incidents by key.
    pub firing: BTreeMap<String, Firing>,
    /// Rules that could not be evaluated this time: their open incidents stay as they are.
    pub unknown: BTreeSet<String>,
}

/// The incident key of a rule, channel and field.
pub fn incident_key(rule: &str, channel: Option<&str>, field: Option<&str>) -> String {
    let mut key = rule.to_string();
    for part in [channel, field].into_iter().flatten() {
        key.push('/');
        key.push_str(part);
    }
    key
}

/// Up to [`EXAMPLES`] distinct SKUs, in the order given.
fn examples<'a>(skus: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in skus {
        if out.len() == EXAMPLES {
            break;
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Field names as people say them.
fn field_word(field: &str) -> &str {
    match field {
        "offer" => "price",
        other => other,
    }
}

/// Evaluates every rule against `world` at `now` (ms).
pub fn evaluate(rules: &[Rule], world: &World, now: i64) -> Evaluation {
    let mut out = Evaluation::default();
    for rule in rules {
        let mut fire = |channel: Option<&str>,
                        field: Option<&str>,
                        count: u64,
                        examples: Vec<String>,
                        summary: String| {
            let key = incident_key(&rule.name, channel, field);
            out.firing.insert(
                key.clone(),
                Firing {
                    key,
                    rule: rule.name.clone(),
                    kind: rule.condition.kind().to_string(),
                    channel: channel.map(str::to_string),
                    field: field.map(str::to_string),
                    count,
                    examples,
                    summary,
                },
            );
        };
        match &rule.condition {
            Condition::DriftAge {
                field,
                older_than_minutes,
            } => {
                let Some(groups) = world.drift.get(&cutoff(now, *older_than_minutes)) else {
                    out.unknown.insert(rule.name.clone());
                    continue;
                };
                for g in groups {
                    if g.count == 0
                        || !rule.watches(&g.channel)
                        || field.is_some_and(|f| f.as_str() != g.field)
                    {
                        continue;
                    }
                    let (channel, f, n) = (g.channel.as_str(), g.field.as_str(), g.count);
                    let oldest = (now - g.oldest).max(0) / 60_000;
                    fire(
                        Some(channel),
                        Some(f),
                        n,
                        examples(g.examples.iter().map(String::as_str)),
                        format!(
                            "{} on {channel} differ for more than {older_than_minutes} min (oldest {oldest} min)",
                            plural(
                                n,
                                &format!("{} value", field_word(f)),
                                &format!("{} values", field_word(f))
                            ),
                        ),
                    );
                }
            }
            Condition::OversellRisk { .. } => {
                let groups = oversell_query(rule, now).and_then(|q| world.oversell.get(&q));
                let Some(groups) = groups else {
                    out.unknown.insert(rule.name.clone());
                    continue;
                };
                for g in groups {
                    if g.count == 0 || !rule.watches(&g.channel) {
                        continue;
                    }
                    let (channel, n, units) = (g.channel.as_str(), g.count, g.units);
                    fire(
                        Some(channel),
                        None,
                        n,
                        examples(g.examples.iter().map(String::as_str)),
                        format!(
                            "{} on {channel} show more than is available ({units} units too many): risk of overselling",
                            plural(n, "stock value", "stock values")
                        ),
                    );
                }
            }
            Condition::ConnectorFailing { for_minutes } => {
                for (id, f) in &world.failing {
                    let minutes = (now - f.since).max(0) / 60_000;
                    if rule.watches(id) && now - f.since >= *for_minutes as i64 * 60_000 {
                        fire(
                            Some(id),
                            None,
                            1,
                            Vec::new(),
                            format!("{id} has been failing for {minutes} min: {}", f.error),
                        );
                    }
                }
            }
            Condition::DeadLetters { at_least } | Condition::Held { at_least } => {
                let dead = matches!(rule.condition, Condition::DeadLetters { .. });
                let groups = if dead {
                    &world.dead_letters
                } else {
                    &world.held
                };
                for g in groups.iter().filter(|g| rule.watches(&g.channel)) {
                    let (channel, n) = (g.channel.as_str(), g.count);
                    if n == 0 || n < *at_least {
                        continue;
                    }
                    let summary = if dead {
                        format!(
                            "{} on {channel}: the API refused them for good (omnisync dead-letters)",
                            plural(n, "dead-lettered correction", "dead-lettered corrections")
                        )
                    } else {
                        format!(
                            "{} on {channel} held for approval (omnisync approve --channel {channel} --list)",
                            plural(n, "correction", "corrections")
                        )
                    };
                    fire(
                        Some(channel),
                        None,
                        n,
                        examples(g.examples.iter().map(String::as_str)),
                        summary,
                    );
                }
            }
            Condition::WebhookSignatureFailures { above_per_minute } => {
                match world.webhook_failures_per_minute {
                    None => {
                        out.unknown.insert(rule.name.clone());
                    }
                    Some(rate) if rate > *above_per_minute => fire(
                        None,
                        None,
                        rate.round() as u64,
                        Vec::new(),
                        format!(
                            "{rate:.1} webhook deliveries per minute refused for a bad or missing signature (threshold {above_per_minute})"
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    out
}

/// A finished run as the connector rule needs it: when it started and each channel's
/// error, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunObservation {
    /// Run id.
    pub id: i64,
    /// Start (ms).
    pub started_at: i64,
    /// (connector id, error) for each channel in the run's report.
    pub channels: Vec<(String, Option<String>)>,
}

/// Follows runs in id order and keeps, per connector, the start of its current run of
/// failures. A target marked "not reconciled" because the *source* failed says nothing about
/// the target itself and is skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorTracker {
    /// The last run id observed.
    pub cursor: i64,
    /// Connectors failing now.
    pub failing: BTreeMap<String, Failing>,
}

impl ConnectorTracker {
    /// Takes one run into account (runs must come in id order).
    pub fn observe(&mut self, run: &RunObservation) {
        self.cursor = self.cursor.max(run.id);
        for (id, error) in &run.channels {
            match error {
                Some(e) if e.starts_with("not reconciled:") => {}
                Some(e) => {
                    let f = self.failing.entry(id.clone()).or_insert(Failing {
                        since: run.started_at,
                        error: String::new(),
                    });
                    f.error = e.clone();
                }
                None => {
                    self.failing.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::planner::Field;

    const MIN: i64 = 60_000;

    fn rule(name: &str, condition: Condition) -> Rule {
        Rule {
            name: name.into(),
            condition,
            channels: vec![],
            notify: vec!["n".into()],
            cooldown: Duration::from_secs(60),
        }
    }

    fn group(channel: &str, field: &str, count: u64, oldest: i64, ex: &[&str]) -> DriftGroup {
        DriftGroup {
            channel: channel.into(),
            field: field.into(),
            count,
            oldest,
            examples: ex.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn drift_age_fires_per_channel_and_field_with_examples() {
        let now = 100 * MIN;
        let rules = [rule(
            "old",
            Condition::DriftAge {
                field: Some(Field::Offer),
                older_than_minutes: 15,
            },
        )];
        let cutoffs = drift_cutoffs(&rules, now);
        assert_eq!(cutoffs, BTreeSet::from([now - 15 * MIN]));
        assert!(drift_watched(&rules, "shop", "offer"));
        assert!(!drift_watched(&rules, "shop", "stock"));
        // What the store counts at that cutoff: 8 old prices (a young one is not counted)
        // and an old stock value, which this rule does not watch.
        let mut world = World::default();
        world.drift.insert(
            now - 15 * MIN,
            vec![
                group(
                    "shop",
                    "offer",
                    8,
                    now - 37 * MIN,
                    &["S7", "S6", "S5", "S4", "S3"],
                ),
                group("shop", "stock", 1, now - 60 * MIN, &[]),
            ],
        );
        let e = evaluate(&rules, &world, now);
        assert_eq!(e.firing.len(), 1);
        assert!(e.unknown.is_empty());
        let f = &e.firing["old/shop/offer"];
        assert_eq!(f.count, 8);
        assert_eq!(f.examples, vec!["S7", "S6", "S5", "S4", "S3"]);
        assert_eq!(
            f.summary,
            "8 price values on shop differ for more than 15 min (oldest 37 min)"
        );
        // Nothing old enough at that cutoff: nothing fires.
        let world = World {
            drift: BTreeMap::from([(now - 40 * MIN, vec![])]),
            ..World::default()
        };
        let e = evaluate(&rules, &world, now - 25 * MIN);
        assert!(e.firing.is_empty() && e.unknown.is_empty(), "{e:?}");
        // Not read for this cutoff: unknown, so its incidents stay as they are.
        let e = evaluate(&rules, &World::default(), now);
        assert!(e.firing.is_empty() && e.unknown.contains("old"), "{e:?}");
    }

    #[test]
    fn drift_age_without_a_field_fires_per_field_on_watched_channels() {
        let now = 100 * MIN;
        let mut r = rule(
            "any",
            Condition::DriftAge {
                field: None,
                older_than_minutes: 0,
            },
        );
        r.channels = vec!["shop".into()];
        let rules = [r];
        let world = World {
            drift: BTreeMap::from([(
                now,
                vec![
                    group("shop", "stock", 1, now - 90 * MIN, &["T"]),
                    group("shop", "listing", 2, now, &["L1", "L2"]),
                    group("other", "offer", 3, now, &[]),
                ],
            )]),
            ..World::default()
        };
        let e = evaluate(&rules, &world, now);
        let keys: Vec<&str> = e.firing.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["any/shop/listing", "any/shop/stock"]);
        assert_eq!(
            e.firing["any/shop/stock"].summary,
            "1 stock value on shop differ for more than 0 min (oldest 90 min)"
        );
        assert!(drift_watched(&rules, "shop", "listing"));
        assert!(!drift_watched(&rules, "other", "offer"));
    }

    #[test]
    fn oversell_fires_per_channel_from_the_counted_excess() {
        let now = 10 * MIN;
        let mut watched = rule(
            "over",
            Condition::OversellRisk {
                min_excess: 1,
                older_than_minutes: 0,
            },
        );
        watched.channels = vec!["m".into()];
        let rules = [watched];
        let q = OversellQuery {
            cutoff: now,
            min_excess: 1,
        };
        assert_eq!(oversell_queries(&rules, now), BTreeSet::from([q]));
        assert!(oversell_watched(&rules, q, now, "m"));
        assert!(!oversell_watched(&rules, q, now, "n"));
        let og = |channel: &str, count, units, ex: &[&str]| OversellGroup {
            channel: channel.into(),
            count,
            units,
            examples: ex.iter().map(|s| s.to_string()).collect(),
        };
        let world = World {
            oversell: BTreeMap::from([(q, vec![og("m", 1, 2, &["A"]), og("n", 4, 9, &[])])]),
            ..World::default()
        };
        let e = evaluate(&rules, &world, now);
        assert_eq!(e.firing.len(), 1, "{e:?}");
        let f = &e.firing["over/m"];
        assert_eq!((f.count, f.examples.clone()), (1, vec!["A".to_string()]));
        assert_eq!(
            f.summary,
            "1 stock value on m show more than is available (2 units too many): risk of overselling"
        );
        // Read for another time: unknown.
        let e = evaluate(&rules, &world, now + MIN);
        assert!(e.firing.is_empty() && e.unknown.contains("over"), "{e:?}");
    }

    #[test]
    fn dead_letters_and_held_fire_from_at_least() {
        let rules = [
            rule("dead", Condition::DeadLetters { at_least: 1 }),
            rule("held", Condition::Held { at_least: 3 }),
        ];
        assert!(items_fire(&rules, true, "m", 1));
        assert!(!items_fire(&rules, false, "m", 2));
        assert!(items_fire(&rules, false, "m", 3));
        let ig = |count, ex: &[&str]| ItemGroup {
            channel: "m".into(),
            count,
            examples: ex.iter().map(|s| s.to_string()).collect(),
        };
        let world = World {
            dead_letters: vec![ig(2, &["A", "B"])],
            held: vec![ig(2, &[])],
            ..World::default()
        };
        let e = evaluate(&rules, &world, 0);
        let keys: Vec<&str> = e.firing.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["dead/m"]);
        assert_eq!(
            e.firing["dead/m"].summary,
            "2 dead-lettered corrections on m: the API refused them for good (omnisync dead-letters)"
        );
        let world = World {
            held: vec![ig(3, &["H1", "H2", "H1"])],
            ..World::default()
        };
        let f = &evaluate(&rules, &world, 0).firing["held/m"];
        assert_eq!(f.examples, vec!["H1", "H2"]);
        assert_eq!(
            f.summary,
            "3 corrections on m held for approval (omnisync approve --channel m --list)"
        );
    }

    #[test]
    fn tracker_follows_streaks_and_ignores_derived_errors() {
        let mut t = ConnectorTracker::default();
        let run = |id: i64, at: i64, err: Option<&str>| RunObservation {
            id,
            started_at: at,
            channels: vec![("shop".into(), err.map(str::to_string))],
        };
        t.observe(&run(1, 0, Some("HTTP 502")));
        t.observe(&run(
            2,
            5 * MIN,
            Some("not reconciled: the source could not be read"),
        ));
        t.observe(&run(3, 10 * MIN, Some("HTTP 503")));
        assert_eq!(t.failing["shop"].since, 0);
        assert_eq!(t.failing["shop"].error, "HTTP 503");
        let rules = [rule(
            "down",
            Condition::ConnectorFailing { for_minutes: 10 },
        )];
        let world = World {
            failing: t.failing.clone(),
            ..World::default()
        };
        assert!(
            evaluate(&rules, &world, 10 * MIN)
                .firing
                .contains_key("down/shop")
        );
        assert!(evaluate(&rules, &world, 9 * MIN).firing.is_empty());
        t.observe(&run(4, 11 * MIN, None));
        assert!(t.failing.is_empty());
        assert_eq!(t.cursor, 4);
    }

    #[test]
    fn webhook_rate_is_unknown_without_a_baseline() {
        let rules = [rule(
            "sig",
            Condition::WebhookSignatureFailures {
                above_per_minute: 2.0,
            },
        )];
        let e = evaluate(&rules, &World::default(), 0);
        assert!(e.unknown.contains("sig") && e.firing.is_empty());
        let world = World {
            webhook_failures_per_minute: Some(2.5),
            ..World::default()
        };
        assert!(evaluate(&rules, &world, 0).firing.contains_key("sig"));
    }
}
