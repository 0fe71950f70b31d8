//! The error taxonomy every connector maps its failures onto.
//!
//! The kind decides what the daemon does next: a [`ErrorKind::Transient`] or
//! [`ErrorKind::Throttled`] error is retried with backoff (honouring `retry_after`), anything
//! else is final for that call: the outbox dead-letters the affected corrections with the
//! message, which always names the operation and, where there is one, the API's own reason.

use std::time::Duration;

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, a 5xx, a timeout: worth retrying.
    Transient,
    /// The API said "slow down" (429, a throttled GraphQL error, a rate-limit error code).
    Throttled,
    /// Credentials were refused. Retrying will not help until someone fixes the config.
    Auth,
    /// The request was refused for what it is (4xx, validation). Retrying will not help.
    Permanent,
    /// The API answered with something we cannot read (malformed JSON, unexpected shape).
    /// Treated as transient a few times, since proxies and overloaded servers produce these.
    Protocol,
    /// The connector was configured wrongly or asked to do what it cannot.
    Config,
}

/// A failed call to an external system.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct ConnectorError {
    /// How to treat it.
    pub kind: ErrorKind,
    /// What we were doing, e.g. `POST /sell/inventory/v1/bulk_update_price_quantity`.
    pub operation: String,
    /// What went wrong, with the API's own reason where it gave one.
    pub message: String,
    /// How long the API asked us to wait, when it said.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
}

impl ConnectorError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            operation: operation.into(),
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }

    /// A transient error.
    pub fn transient(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, operation, message)
    }

    /// A throttling answer, with the wait the API asked for.
    pub fn throttled(
        operation: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let mut e = Self::new(ErrorKind::Throttled, operation, message);
        e.retry_after = retry_after;
        e
    }

    /// A permanent refusal.
    pub fn permanent(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, operation, message)
    }

    /// An unreadable answer.
    pub fn protocol(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, operation, message)
    }

    /// A configuration problem or an unsupported request.
    pub fn config(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, operation, message)
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Transient | ErrorKind::Throttled | ErrorKind::Protocol
        )
    }
}
