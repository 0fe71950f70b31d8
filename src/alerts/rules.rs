//! Rule evaluation, pure: the state of the world (a [`World`] read from the store and the
//! daemon's counters) and the time in, the set of firing incidents out.
//!
//! An incident is keyed by rule + channel (+ field), never by SKU, so a thousand drifting
//! prices on one channel are one incident carrying the count and a few example SKUs.

use std::collections::{BTreeMap, BTreeSet};

use crate::alerts::config::{Condition, Rule};
use crate::planner::Field;

/// How many example SKUs an incident carries.
pub const EXAMPLES: usize = 5;

/// One open difference of a target (a `target_state` row with `in_sync = 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    /// Connector id.
    pub channel: String,
    /// `offer`, `stock` or `listing`.
    pub field: String,
    /// SKU.
    pub sku: String,
    /// Channel location code (stock).
    pub location: String,
    /// When the difference opened (ms).
    pub since: i64,
    /// What it should show.
    pub desired: String,
    /// What it shows.
    pub observed: Option<String>,
}

/// A SKU-level row counted per channel (an unresolved dead letter, a held correction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// Connector id.
    pub channel: String,
    /// SKU.
    pub sku: String,
    /// When it was written (ms).
    pub at: i64,
}

/// A connector whose latest runs failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// Start of the first run of the current run of failures (ms).
    pub since: i64,
    /// The latest error.
    pub error: String,
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Open differences.
    pub drift: Vec<DriftRow>,
    /// Unresolved dead letters.
    pub dead_letters: Vec<ItemRow>,
    /// Corrections held for approval.
    pub held: Vec<ItemRow>,
    /// Connectors whose latest runs failed, by id.
    pub failing: BTreeMap<String, Failing>,
    /// Webhook signature failures per minute since the previous evaluation; `None` when
    /// there is no previous sample yet (the rule is then not evaluated).
    pub webhook_failures_per_minute: Option<f64>,
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
                let cutoff = now - *older_than_minutes as i64 * 60_000;
                let mut groups: BTreeMap<(&str, &str), Vec<&DriftRow>> = BTreeMap::new();
                for d in &world.drift {
                    if d.since <= cutoff
                        && rule.watches(&d.channel)
                        && field.is_none_or(|f| f.as_str() == d.field)
                    {
                        groups
                            .entry((d.channel.as_str(), d.field.as_str()))
                            .or_default()
                            .push(d);
                    }
                }
                for ((channel, f), mut rows) in groups {
                    rows.sort_by(|a, b| (a.since, &a.sku).cmp(&(b.since, &b.sku)));
                    let oldest = (now - rows[0].since).max(0) / 60_000;
                    let n = rows.len() as u64;
                    fire(
                        Some(channel),
                        Some(f),
                        n,
                        examples(rows.iter().map(|r| r.sku.as_str())),
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
            Condition::OversellRisk {
                min_excess,
                older_than_minutes,
            } => {
                let cutoff = now - *older_than_minutes as i64 * 60_000;
                let mut groups: BTreeMap<&str, Vec<(&DriftRow, i64)>> = BTreeMap::new();
                for d in &world.drift {
                    if d.field != Field::Stock.as_str()
                        || d.since > cutoff
                        || !rule.watches(&d.channel)
                    {
                        continue;
                    }
                    let (Ok(want), Some(Ok(shown))) = (
                        d.desired.trim().parse::<i64>(),
                        d.observed.as_deref().map(|o| o.trim().parse::<i64>()),
                    ) else {
                        continue;
                    };
                    if shown - want >= *min_excess {
                        groups
                            .entry(d.channel.as_str())
                            .or_default()
                            .push((d, shown - want));
                    }
                }
                for (channel, mut rows) in groups {
                    // Largest excess first: those are the SKUs most likely to oversell.
                    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.sku.cmp(&b.0.sku)));
                    let n = rows.len() as u64;
                    let units: i64 = rows.iter().map(|r| r.1).sum();
                    fire(
                        Some(channel),
                        None,
                        n,
                        examples(rows.iter().map(|r| r.0.sku.as_str())),
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
                let rows = if dead {
                    &world.dead_letters
                } else {
                    &world.held
                };
                let mut groups: BTreeMap<&str, Vec<&ItemRow>> = BTreeMap::new();
                for r in rows.iter().filter(|r| rule.watches(&r.channel)) {
                    groups.entry(r.channel.as_str()).or_default().push(r);
                }
                for (channel, mut rows) in groups {
                    let n = rows.len() as u64;
                    if n < *at_least {
                        continue;
                    }
                    rows.sort_by(|a, b| (a.at, &a.sku).cmp(&(b.at, &b.sku)));
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
                        examples(rows.iter().map(|r| r.sku.as_str())),
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

    fn drift(channel: &str, field: &str, sku: &str, since: i64, d: &str, o: &str) -> DriftRow {
        DriftRow {
            channel: channel.into(),
            field: field.into(),
            sku: sku.into(),
            location: String::new(),
            since,
            desired: d.into(),
            observed: Some(o.into()),
        }
    }

    #[test]
    fn drift_age_groups_per_channel_and_field_with_examples() {
        let now = 100 * MIN;
        let mut world = World::default();
        for i in 0..8 {
            world.drift.push(drift(
                "shop",
                "offer",
                &format!("S{i}"),
                now - (30 + i) * MIN,
                "1",
                "2",
            ));
        }
        world
            .drift
            .push(drift("shop", "offer", "NEW", now - MIN, "1", "2"));
        world
            .drift
            .push(drift("shop", "stock", "T", now - 60 * MIN, "1", "2"));
        let rules = [rule(
            "old",
            Condition::DriftAge {
                field: Some(Field::Offer),
                older_than_minutes: 15,
            },
        )];
        let e = evaluate(&rules, &world, now);
        assert_eq!(e.firing.len(), 1);
        let f = &e.firing["old/shop/offer"];
        assert_eq!(f.count, 8);
        assert_eq!(f.examples, vec!["S7", "S6", "S5", "S4", "S3"]);
        assert!(
            f.summary.contains("8 price values on shop"),
            "{}",
            f.summary
        );
        // Younger than the threshold: nothing.
        let e = evaluate(&rules, &world, now - 25 * MIN);
        assert!(e.firing.is_empty(), "{:?}", e.firing);
    }

    #[test]
    fn oversell_needs_more_shown_than_available() {
        let now = 10 * MIN;
        let mut world = World::default();
        world.drift.push(drift("m", "stock", "A", now, "3", "5"));
        world.drift.push(drift("m", "stock", "B", now, "5", "3"));
        world.drift.push(drift("m", "offer", "C", now, "3", "5"));
        let rules = [rule(
            "over",
            Condition::OversellRisk {
                min_excess: 1,
                older_than_minutes: 0,
            },
        )];
        let e = evaluate(&rules, &world, now);
        let f = &e.firing["over/m"];
        assert_eq!((f.count, f.examples.clone()), (1, vec!["A".to_string()]));
        assert!(f.summary.contains("2 units too many"), "{}", f.summary);
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
