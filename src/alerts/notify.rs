//! Notifiers: a generic JSON webhook, a Slack-compatible incoming webhook and e-mail over
//! SMTP (`lettre`), each delivering one [`Message`] with retries (`backon` through
//! [`omnisync_sdk::retry`]: transient failures only, with backoff and jitter).
//!
//! URLs and passwords are secrets: they are resolved from their
//! [`SecretRef`](omnisync_sdk::SecretRef) when the notifier is built, held as
//! [`SecretString`], and never appear in errors or logs (HTTP transport errors are mapped
//! without the URL). A notifier whose secret cannot be read is still built, and fails every
//! delivery with the reason, so the others keep working.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use omnisync_sdk::ConnectorError;
use omnisync_sdk::http::HttpClient;
use omnisync_sdk::retry::{RetryPolicy, retry};
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::alerts::AlertError;
use crate::alerts::config::{NotifierConfig, NotifierTarget, SmtpConfig, SmtpSecurity};

/// Whether an incident opened or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The incident opened.
    Open,
    /// The incident resolved.
    Resolved,
}

impl Event {
    /// `open` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Resolved => "resolved",
        }
    }
}

/// An incident as notifiers show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    /// Row id.
    pub id: i64,
    /// `rule[/channel[/field]]`.
    pub key: String,
    /// Rule name.
    pub rule: String,
    /// Rule kind.
    pub kind: String,
    /// Channel or connector.
    pub channel: Option<String>,
    /// Field.
    pub field: Option<String>,
    /// When it opened (ms).
    pub opened_at: i64,
    /// When it resolved (ms).
    pub resolved_at: Option<i64>,
    /// How many rows made it fire (latest evaluation).
    pub count: u64,
    /// A few SKUs.
    pub examples: Vec<String>,
    /// One line for people.
    pub summary: String,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Open or resolved.
    pub event: Event,
    /// The subject line.
    pub title: String,
    /// The plain-text body.
    pub text: String,
    /// The incident.
    pub incident: IncidentView,
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl Message {
    /// The message for an incident that opened or resolved.
    pub fn new(event: Event, incident: IncidentView) -> Message {
        let what = match (&incident.channel, &incident.field) {
            (Some(c), Some(f)) => format!("{} on {c} ({f})", incident.rule),
            (Some(c), None) => format!("{} on {c}", incident.rule),
            _ => incident.rule.clone(),
        };
        let title = match event {
            Event::Open => format!("[omnisync] OPEN {what}: {}", incident.summary),
            Event::Resolved => format!("[omnisync] RESOLVED {what}"),
        };
        let mut text = match event {
            Event::Open => format!("{}\n", incident.summary),
            Event::Resolved => {
                let minutes = incident
                    .resolved_at
                    .map_or(0, |r| (r - incident.opened_at).max(0) / 60_000);
                format!(
                    "Resolved after {minutes} min. Last seen: {}\n",
                    incident.summary
                )
            }
        };
        text.push_str(&format!(
            "\nrule: {} ({})\nincident: {}\nopened: {}\n",
            incident.rule,
            incident.kind,
            incident.key,
            rfc3339(incident.opened_at)
        ));
        if let Some(r) = incident.resolved_at {
            text.push_str(&format!("resolved: {}\n", rfc3339(r)));
        }
        if !incident.examples.is_empty() {
            text.push_str(&format!("examples: {}\n", incident.examples.join(", ")));
        }
        Message {
            event,
            title,
            text,
            incident,
        }
    }
}

enum Target {
    Webhook {
        client: HttpClient,
        url: SecretString,
    },
    Slack {
        client: HttpClient,
        url: SecretString,
    },
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    /// Could not be built; every delivery fails with this reason.
    Broken(String),
}

/// A built notifier.
pub struct Notifier {
    name: String,
    kind: &'static str,
    target: Target,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL or the password.
        f.debug_struct("Notifier")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Builds a notifier, resolving its secrets. Never fails: a notifier that cannot be
    /// built fails each delivery with the reason (logged), and the others work.
    pub fn build(cfg: &NotifierConfig) -> Notifier {
        let kind = match &cfg.target {
            NotifierTarget::Webhook { .. } => "webhook",
            NotifierTarget::Slack { .. } => "slack",
            NotifierTarget::Smtp(_) => "smtp",
        };
        let target = Self::target(cfg).unwrap_or_else(|e| {
            tracing::error!(notifier = %cfg.name, error = %e, "alert notifier cannot be used");
            Target::Broken(e.to_string())
        });
        Notifier {
            name: cfg.name.clone(),
            kind,
            target,
        }
    }

    fn target(cfg: &NotifierConfig) -> Result<Target, AlertError> {
        let secret = |r: &omnisync_sdk::SecretRef| {
            r.resolve().map_err(|source| AlertError::Secret {
                notifier: cfg.name.clone(),
                source,
            })
        };
        let client = || {
            HttpClient::new(cfg.timeout, None).map_err(|e| AlertError::Build {
                notifier: cfg.name.clone(),
                reason: e.to_string(),
            })
        };
        Ok(match &cfg.target {
            NotifierTarget::Webhook { url } => Target::Webhook {
                client: client()?,
                url: secret(url)?,
            },
            NotifierTarget::Slack { url } => Target::Slack {
                client: client()?,
                url: secret(url)?,
            },
            NotifierTarget::Smtp(smtp) => Self::smtp(cfg, smtp, secret)?,
        })
    }

    fn smtp(
        cfg: &NotifierConfig,
        smtp: &SmtpConfig,
        secret: impl Fn(&omnisync_sdk::SecretRef) -> Result<SecretString, AlertError>,
    ) -> Result<Target, AlertError> {
        let build = |reason: String| AlertError::Build {
            notifier: cfg.name.clone(),
            reason,
        };
        let builder = match smtp.security {
            SmtpSecurity::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| build(e.to_string()))?,
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                    .map_err(|e| build(e.to_string()))?
            }
        };
        let mut builder = builder.port(smtp.port).timeout(Some(cfg.timeout));
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            let password = secret(password)?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        let mailbox = |v: &str| {
            v.parse::<Mailbox>()
                .map_err(|e| build(format!("{v:?}: {e}")))
        };
        Ok(Target::Smtp {
            transport: Box::new(builder.build()),
            from: mailbox(&smtp.from)?,
            to: smtp
                .to
                .iter()
                .map(|t| mailbox(t))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `webhook`, `slack` or `smtp`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Delivers `message`, retrying transient failures under `policy`.
    pub async fn send(&self, message: &Message, policy: RetryPolicy) -> Result<(), AlertError> {
        let failed = |e: ConnectorError| AlertError::Delivery {
            notifier: self.name.clone(),
            reason: e.to_string(),
        };
        match &self.target {
            Target::Broken(reason) => Err(AlertError::Delivery {
                notifier: self.name.clone(),
                reason: reason.clone(),
            }),
            Target::Webhook { client, url } => {
                let body = serde_json::to_value(message).unwrap_or_default();
                post(client, url, &body, "POST alert webhook", policy)
                    .await
                    .map_err(failed)
            }
            Target::Slack { client, url } => {
                let body = slack_body(message);
                post(client, url, &body, "POST Slack incoming webhook", policy)
                    .await
                    .map_err(failed)
            }
            Target::Smtp {
                transport,
                from,
                to,
            } => {
                let mut builder = lettre::Message::builder()
                    .from(from.clone())
                    .subject(message.title.clone())
                    .header(ContentType::TEXT_PLAIN);
                for t in to {
                    builder = builder.to(t.clone());
                }
                let email =
                    builder
                        .body(message.text.clone())
                        .map_err(|e| AlertError::Delivery {
                            notifier: self.name.clone(),
                            reason: format!("building the e-mail: {e}"),
                        })?;
                retry(policy, || async {
                    transport
                        .send(email.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            let op = "SMTP send";
                            if e.is_permanent() || e.is_client() {
                                ConnectorError::permanent(op, e.to_string())
                            } else {
                                ConnectorError::transient(op, e.to_string())
                            }
                        })
                })
                .await
                .map_err(failed)
            }
        }
    }
}

async fn post(
    client: &HttpClient,
    url: &SecretString,
    body: &serde_json::Value,
    operation: &str,
    policy: RetryPolicy,
) -> Result<(), ConnectorError> {
    retry(policy, || async {
        let request = client.raw().post(url.expose_secret()).json(body);
        client.send(operation, request).await.map(|_| ())
    })
    .await
}

/// Slack's incoming-webhook shape: `text` (the fallback and notification line) and one
/// section block with the details.
pub fn slack_body(message: &Message) -> serde_json::Value {
    let icon = match message.event {
        Event::Open => ":rotating_light:",
        Event::Resolved => ":white_check_mark:",
    };
    serde_json::json!({
        "text": format!("{icon} {}", message.title),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} *{}*", message.title)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", message.text.trim_end())}}
        ]
    })
}

/// The retry policy for deliveries: a few quick tries; an incident still unannounced is
/// tried again at the next evaluation anyway.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        max_retry_after: Duration::from_secs(30),
    }
}
