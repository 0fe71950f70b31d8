//! `[alerts]`: the rules, the notifiers and their timing, parsed strictly and validated.
//!
//! The raw shapes ([`RawAlerts`]) are what the TOML file holds; [`validate`] turns them into
//! an [`AlertsConfig`] and lists every problem as (dotted key, reason), which
//! [`crate::config`] reports with the file name like any other problem. A rule kind only
//! accepts the keys that mean something for it, a rule must name known notifiers and known
//! connectors, and every URL or password is a [`SecretRef`] (`env:`, `file:`,
//! `credential:`, `literal:`), never a value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use omnisync_sdk::SecretRef;
use serde::Deserialize;

use crate::planner::Field;

/// `[alerts]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Seconds between two evaluations of the rules (default 30).
    #[serde(default = "default_every")]
    pub evaluate_every_secs: u64,
    /// Seconds during which an incident that flaps is not announced again (default 900).
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
    /// `[alerts.rules.NAME]`.
    #[serde(default)]
    pub rules: BTreeMap<String, RawRule>,
    /// `[alerts.notifiers.NAME]`.
    #[serde(default)]
    pub notifiers: BTreeMap<String, RawNotifier>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            evaluate_every_secs: default_every(),
            cooldown_secs: default_cooldown(),
            rules: BTreeMap::new(),
            notifiers: BTreeMap::new(),
        }
    }
}

fn default_every() -> u64 {
    30
}
fn default_cooldown() -> u64 {
    900
}

/// `[alerts.rules.NAME]` as written: one flat table; which keys apply depends on `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `drift_age`, `oversell_risk`, `connector_failing`, `dead_letters`, `held` or
    /// `webhook_signature_failures`.
    pub kind: String,
    /// Connector ids the rule watches (default: all).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Notifier names to tell.
    #[serde(default)]
    pub notify: Vec<String>,
    /// This rule's own cooldown (default `alerts.cooldown_secs`).
    #[serde(default)]
    pub cooldown_secs: Option<u64>,
    /// `drift_age`: `price` (or `offer`), `stock` or `listing` (default: every field).
    #[serde(default)]
    pub field: Option<String>,
    /// `drift_age` (required), `oversell_risk`: how old a difference must be.
    #[serde(default)]
    pub older_than_minutes: Option<u64>,
    /// `connector_failing` (required): how long consecutive failures must span.
    #[serde(default)]
    pub for_minutes: Option<u64>,
    /// `dead_letters`, `held`: fire from this many rows on a channel (default 1).
    #[serde(default)]
    pub at_least: Option<u64>,
    /// `oversell_risk`: fire when a channel shows at least this many units more than is
    /// available (default 1).
    #[serde(default)]
    pub min_excess: Option<i64>,
    /// `webhook_signature_failures` (required): fire above this many 401s per minute.
    #[serde(default)]
    pub above_per_minute: Option<f64>,
}

/// `[alerts.notifiers.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifier {
    /// `webhook` (generic JSON), `slack` (incoming webhook) or `smtp` (e-mail).
    pub kind: String,
    /// `webhook`, `slack`: where to POST (a secret reference: Slack URLs are credentials).
    #[serde(default)]
    pub url: Option<SecretRef>,
    /// `smtp`: the server.
    #[serde(default)]
    pub host: Option<String>,
    /// `smtp`: the port (default 587 for `starttls`, 465 for `tls`, 25 for `plain`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `smtp`: `starttls` (default), `tls` (implicit TLS) or `plain` (local relays only).
    #[serde(default)]
    pub security: Option<String>,
    /// `smtp`: the login, when the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// `smtp`: the password (a secret reference), required with `username`.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `smtp`: the sender, e.g. `omnisync <omnisync@example.com>`.
    #[serde(default)]
    pub from: Option<String>,
    /// `smtp`: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Seconds one delivery attempt may take (default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Validated `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Time between two evaluations.
    pub evaluate_every: Duration,
    /// The default cooldown.
    pub cooldown: Duration,
    /// The rules, in name order.
    pub rules: Vec<Rule>,
    /// The notifiers, in name order.
    pub notifiers: Vec<NotifierConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_every: Duration::from_secs(default_every()),
            cooldown: Duration::from_secs(default_cooldown()),
            rules: Vec::new(),
            notifiers: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name (the key under `[alerts.rules]`).
    pub name: String,
    /// What makes it fire.
    pub condition: Condition,
    /// Connector ids it watches; empty means all.
    pub channels: Vec<String>,
    /// Notifier names it tells.
    pub notify: Vec<String>,
    /// How long a flapping incident stays quiet.
    pub cooldown: Duration,
}

impl Rule {
    /// Whether the rule watches this connector.
    pub fn watches(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Open differences of a field older than a number of minutes.
    DriftAge {
        /// The field, or every field.
        field: Option<Field>,
        /// Minimum age.
        older_than_minutes: u64,
    },
    /// A stock target showing more units than are available.
    OversellRisk {
        /// Minimum excess in units.
        min_excess: i64,
        /// Minimum age of the difference.
        older_than_minutes: u64,
    },
    /// A connector whose consecutive failed runs span at least this long.
    ConnectorFailing {
        /// Minutes.
        for_minutes: u64,
    },
    /// Unresolved dead letters on a channel.
    DeadLetters {
        /// Fire from this many.
        at_least: u64,
    },
    /// Corrections held for approval on a channel.
    Held {
        /// Fire from this many.
        at_least: u64,
    },
    /// Webhook deliveries refused for their signature (401), per minute between two
    /// evaluations.
    WebhookSignatureFailures {
        /// Fire above this rate.
        above_per_minute: f64,
    },
}

impl Condition {
    /// The kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::DriftAge { .. } => "drift_age",
            Condition::OversellRisk { .. } => "oversell_risk",
            Condition::ConnectorFailing { .. } => "connector_failing",
            Condition::DeadLetters { .. } => "dead_letters",
            Condition::Held { .. } => "held",
            Condition::WebhookSignatureFailures { .. } => "webhook_signature_failures",
        }
    }
}

/// The rule kinds, as written.
pub const RULE_KINDS: [&str; 6] = [
    "drift_age",
    "oversell_risk",
    "connector_failing",
    "dead_letters",
    "held",
    "webhook_signature_failures",
];

/// One validated notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierConfig {
    /// Its name (the key under `[alerts.notifiers]`).
    pub name: String,
    /// Where and how it delivers.
    pub target: NotifierTarget,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// Where a notifier delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifierTarget {
    /// A generic JSON webhook (POST).
    Webhook {
        /// The URL (a secret).
        url: SecretRef,
    },
    /// A Slack-compatible incoming webhook.
    Slack {
        /// The URL (a secret).
        url: SecretRef,
    },
    /// E-mail over SMTP.
    Smtp(SmtpConfig),
}

/// How to reach an SMTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport security.
    pub security: SmtpSecurity,
    /// Login, when the server wants one.
    pub username: Option<String>,
    /// Password reference (set whenever `username` is).
    pub password: Option<SecretRef>,
    /// Sender mailbox.
    pub from: String,
    /// Recipient mailboxes.
    pub to: Vec<String>,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// Implicit TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: local relays and tests only.
    Plain,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Validates `[alerts]` against the configured connector ids. Returns the config and every
/// problem as (dotted key, reason); the config is only meaningful when there are none.
pub fn validate(
    raw: &RawAlerts,
    connectors: &BTreeSet<String>,
) -> (AlertsConfig, Vec<(String, String)>) {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut push = |k: String, r: String| problems.push((k, r));
    if raw.evaluate_every_secs < 1 {
        push(
            "alerts.evaluate_every_secs".into(),
            "must be at least 1".into(),
        );
    }

    let mut notifiers = Vec::new();
    for (name, n) in &raw.notifiers {
        let k = format!("alerts.notifiers.{name}");
        if !name_ok(name) {
            push(
                k.clone(),
                "notifier names use letters, digits, '-' and '_' only".into(),
            );
        }
        let timeout = Duration::from_secs(n.timeout_secs.unwrap_or(30).max(1));
        let mut not_for = |key: &str, set: bool, kind: &str| {
            if set {
                push(
                    format!("{k}.{key}"),
                    format!("not a setting of a {kind} notifier"),
                );
            }
        };
        let target = match n.kind.as_str() {
            kind @ ("webhook" | "slack") => {
                not_for("host", n.host.is_some(), kind);
                not_for("port", n.port.is_some(), kind);
                not_for("security", n.security.is_some(), kind);
                not_for("username", n.username.is_some(), kind);
                not_for("password", n.password.is_some(), kind);
                not_for("from", n.from.is_some(), kind);
                not_for("to", !n.to.is_empty(), kind);
                match &n.url {
                    Some(url) if kind == "webhook" => {
                        Some(NotifierTarget::Webhook { url: url.clone() })
                    }
                    Some(url) => Some(NotifierTarget::Slack { url: url.clone() }),
                    None => {
                        push(
                            format!("{k}.url"),
                            "required: a secret reference such as \"credential:slack-webhook\""
                                .into(),
                        );
                        None
                    }
                }
            }
            "smtp" => {
                not_for("url", n.url.is_some(), "smtp");
                let security = match n.security.as_deref().unwrap_or("starttls") {
                    "starttls" => Some(SmtpSecurity::Starttls),
                    "tls" => Some(SmtpSecurity::Tls),
                    "plain" => Some(SmtpSecurity::Plain),
                    other => {
                        push(
                            format!("{k}.security"),
                            format!("{other:?}: expected starttls, tls or plain"),
                        );
                        None
                    }
                };
                let host = n.host.clone().filter(|h| !h.trim().is_empty());
                if host.is_none() {
                    push(format!("{k}.host"), "required".into());
                }
                if n.port == Some(0) {
                    push(format!("{k}.port"), "must be between 1 and 65535".into());
                }
                if n.username.is_some() != n.password.is_some() {
                    push(
                        format!("{k}.password"),
                        "username and password go together".into(),
                    );
                }
                let mailbox = |v: &str| v.parse::<lettre::message::Mailbox>().map(|_| ());
                match &n.from {
                    None => push(format!("{k}.from"), "required".into()),
                    Some(f) => {
                        if let Err(e) = mailbox(f) {
                            push(
                                format!("{k}.from"),
                                format!("{f:?} is not a mail address ({e})"),
                            );
                        }
                    }
                }
                if n.to.is_empty() {
                    push(format!("{k}.to"), "name at least one recipient".into());
                }
                for (i, t) in n.to.iter().enumerate() {
                    if let Err(e) = mailbox(t) {
                        push(
                            format!("{k}.to[{i}]"),
                            format!("{t:?} is not a mail address ({e})"),
                        );
                    }
                }
                match (security, host, &n.from) {
                    (Some(security), Some(host), Some(from)) => {
                        Some(NotifierTarget::Smtp(SmtpConfig {
                            host,
                            port: n.port.unwrap_or(match security {
                                SmtpSecurity::Starttls => 587,
                                SmtpSecurity::Tls => 465,
                                SmtpSecurity::Plain => 25,
                            }),
                            security,
                            username: n.username.clone(),
                            password: n.password.clone(),
                            from: from.clone(),
                            to: n.to.clone(),
                        }))
                    }
                    _ => None,
                }
            }
            other => {
                push(
                    format!("{k}.kind"),
                    format!("unknown notifier kind {other:?} (known: webhook, slack, smtp)"),
                );
                None
            }
        };
        if let Some(target) = target {
            notifiers.push(NotifierConfig {
                name: name.clone(),
                target,
                timeout,
            });
        }
    }

    let mut rules = Vec::new();
    for (name, r) in &raw.rules {
        let k = format!("alerts.rules.{name}");
        if !name_ok(name) {
            push(
                k.clone(),
                "rule names use letters, digits, '-' and '_' only".into(),
            );
        }
        if r.notify.is_empty() {
            push(
                format!("{k}.notify"),
                "name at least one notifier from [alerts.notifiers]".into(),
            );
        }
        for n in &r.notify {
            if !raw.notifiers.contains_key(n) {
                push(
                    format!("{k}.notify"),
                    format!(
                        "unknown notifier {n:?} (known: {})",
                        raw.notifiers
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        for ch in &r.channels {
            if !connectors.contains(ch) {
                push(format!("{k}.channels"), format!("unknown connector {ch:?}"));
            }
        }
        // Keys that mean nothing for this kind are refused, like unknown keys.
        let set: [(&str, bool); 6] = [
            ("field", r.field.is_some()),
            ("older_than_minutes", r.older_than_minutes.is_some()),
            ("for_minutes", r.for_minutes.is_some()),
            ("at_least", r.at_least.is_some()),
            ("min_excess", r.min_excess.is_some()),
            ("above_per_minute", r.above_per_minute.is_some()),
        ];
        let allowed: &[&str] = match r.kind.as_str() {
            "drift_age" => &["field", "older_than_minutes"],
            "oversell_risk" => &["older_than_minutes", "min_excess"],
            "connector_failing" => &["for_minutes"],
            "dead_letters" | "held" => &["at_least"],
            "webhook_signature_failures" => &["above_per_minute"],
            other => {
                push(
                    format!("{k}.kind"),
                    format!(
                        "unknown rule kind {other:?} (known: {})",
                        RULE_KINDS.join(", ")
                    ),
                );
                continue;
            }
        };
        for (key, is_set) in set {
            if is_set && !allowed.contains(&key) {
                push(
                    format!("{k}.{key}"),
                    format!("not a setting of a {} rule", r.kind),
                );
            }
        }
        if r.kind == "webhook_signature_failures" && !r.channels.is_empty() {
            push(
                format!("{k}.channels"),
                "webhook signature failures are counted for the whole daemon, not per channel"
                    .into(),
            );
        }
        let mut required = |key: &str, v: Option<u64>| {
            if v.is_none() {
                push(
                    format!("{k}.{key}"),
                    format!("required for a {} rule", r.kind),
                );
            }
            v.unwrap_or(0)
        };
        let condition = match r.kind.as_str() {
            "drift_age" => {
                let older_than_minutes = required("older_than_minutes", r.older_than_minutes);
                let field = match r.field.as_deref() {
                    None => None,
                    Some("price" | "offer") => Some(Field::Offer),
                    Some("stock") => Some(Field::Stock),
                    Some("listing") => Some(Field::Listing),
                    Some(other) => {
                        push(
                            format!("{k}.field"),
                            format!("{other:?}: expected price, stock or listing"),
                        );
                        None
                    }
                };
                Condition::DriftAge {
                    field,
                    older_than_minutes,
                }
            }
            "oversell_risk" => {
                let min_excess = r.min_excess.unwrap_or(1);
                if min_excess < 1 {
                    push(format!("{k}.min_excess"), "must be at least 1".into());
                }
                Condition::OversellRisk {
                    min_excess,
                    older_than_minutes: r.older_than_minutes.unwrap_or(0),
                }
            }
            "connector_failing" => Condition::ConnectorFailing {
                for_minutes: required("for_minutes", r.for_minutes),
            },
            "dead_letters" | "held" => {
                let at_least = r.at_least.unwrap_or(1);
                if at_least < 1 {
                    push(format!("{k}.at_least"), "must be at least 1".into());
                }
                if r.kind == "held" {
                    Condition::Held { at_least }
                } else {
                    Condition::DeadLetters { at_least }
                }
            }
            _ => {
                let above_per_minute = match r.above_per_minute {
                    Some(v) if v.is_finite() && v >= 0.0 => v,
                    Some(_) => {
                        push(
                            format!("{k}.above_per_minute"),
                            "must be a number of at least 0".into(),
                        );
                        0.0
                    }
                    None => {
                        push(
                            format!("{k}.above_per_minute"),
                            "required for a webhook_signature_failures rule".into(),
                        );
                        0.0
                    }
                };
                Condition::WebhookSignatureFailures { above_per_minute }
            }
        };
        rules.push(Rule {
            name: name.clone(),
            condition,
            channels: r.channels.clone(),
            notify: r.notify.clone(),
            cooldown: Duration::from_secs(r.cooldown_secs.unwrap_or(raw.cooldown_secs)),
        });
    }

    (
        AlertsConfig {
            evaluate_every: Duration::from_secs(raw.evaluate_every_secs.max(1)),
            cooldown: Duration::from_secs(raw.cooldown_secs),
            rules,
            notifiers,
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawAlerts {
        toml::from_str(toml_text).unwrap()
    }

    fn ids() -> BTreeSet<String> {
        ["erp", "webshop"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_good_section_validates() {
        let (cfg, problems) = validate(
            &raw(r#"
cooldown_secs = 60
[rules.stale-price]
kind = "drift_age"
field = "price"
older_than_minutes = 15
channels = ["webshop"]
notify = ["hook", "mail"]
[notifiers.hook]
kind = "slack"
url = "env:SLACK_URL"
[notifiers.mail]
kind = "smtp"
host = "smtp.example.com"
security = "tls"
username = "ops"
password = "credential:smtp-password"
from = "omnisync <omnisync@example.com>"
to = ["ops@example.com"]
"#),
            &ids(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.rules.len(), 1);
        assert_eq!(
            cfg.rules[0].condition,
            Condition::DriftAge {
                field: Some(Field::Offer),
                older_than_minutes: 15
            }
        );
        assert_eq!(cfg.rules[0].cooldown, Duration::from_secs(60));
        let NotifierTarget::Smtp(smtp) = &cfg.notifiers[1].target else {
            panic!("{:?}", cfg.notifiers);
        };
        assert_eq!((smtp.port, smtp.security), (465, SmtpSecurity::Tls));
    }

    #[test]
    fn problems_name_the_key_and_the_reason() {
        let (_, problems) = validate(
            &raw(r#"
[rules.a]
kind = "dead_letters"
for_minutes = 3
channels = ["nowhere"]
notify = ["ghost"]
[rules.b]
kind = "drift_age"
[rules.c]
kind = "teapot"
notify = ["m"]
[notifiers.m]
kind = "smtp"
host = "h"
security = "rot13"
from = "not an address"
"#),
            &ids(),
        );
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for want in [
            "alerts.rules.a.for_minutes",
            "alerts.rules.a.channels",
            "alerts.rules.a.notify",
            "alerts.rules.b.older_than_minutes",
            "alerts.rules.b.notify",
            "alerts.rules.c.kind",
            "alerts.notifiers.m.security",
            "alerts.notifiers.m.from",
            "alerts.notifiers.m.to",
        ] {
            assert!(keys.contains(&want), "{want} missing from {problems:?}");
        }
        let ghost = problems
            .iter()
            .find(|(k, r)| k == "alerts.rules.a.notify" && r.contains("ghost"));
        assert!(ghost.is_some(), "{problems:?}");
    }
}
