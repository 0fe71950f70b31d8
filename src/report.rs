//! Run reports: the figures of one reconcile pass per channel, and their renderings as a
//! terminal table, JSON and CSV.

use std::collections::BTreeMap;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

/// Drift found on a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounts {
    /// Offers that differ.
    pub price: u64,
    /// Stock quantities that differ.
    pub stock: u64,
    /// Listings the channel should carry but does not.
    pub missing: u64,
    /// Listings bound to no canonical item.
    pub orphan: u64,
    /// Differences by cause (`unknown` when it cannot be told).
    pub by_cause: BTreeMap<String, u64>,
}

/// What became of corrections in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionCounts {
    /// Queued in the outbox.
    pub queued: u64,
    /// Sent to the API.
    pub sent: u64,
    /// Confirmed by reading the channel back.
    pub confirmed: u64,
    /// Dead-lettered.
    pub failed: u64,
    /// Held for approval.
    pub held: u64,
    /// Rescheduled for a later attempt.
    pub retrying: u64,
}

/// A correction a dry run would push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WouldPush {
    /// SKU.
    pub sku: String,
    /// `offer`, `stock` or `listing`.
    pub field: String,
    /// Channel location code for stock.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// What the channel shows.
    pub observed: Option<String>,
    /// What it would be set to.
    pub desired: String,
    /// Held for approval, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The per-channel figures every rendering shows: (table heading, CSV column).
const COLUMNS: [(&str, &str); 15] = [
    ("channel", "channel"),
    ("kind", "kind"),
    ("role", "role"),
    ("checked", "items_checked"),
    ("in sync", "in_sync"),
    ("consistency", "consistency"),
    ("price", "drift_price"),
    ("stock", "drift_stock"),
    ("missing", "drift_missing"),
    ("orphan", "drift_orphan"),
    ("queued", "queued"),
    ("sent", "sent"),
    ("confirmed", "confirmed"),
    ("failed", "failed"),
    ("held", "held"),
];

/// One channel in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Connector id.
    pub id: String,
    /// Connector kind.
    pub kind: String,
    /// `source`, `target`, `observer` (per field: `price/stock`).
    pub role: String,
    /// Canonical items the channel should list.
    pub items_checked: u64,
    /// Of those, items whose every value agreed when checked.
    pub in_sync: u64,
    /// `in_sync / items_checked` (1.0 when nothing to check).
    pub consistency: f64,
    /// Drift found.
    pub drift: DriftCounts,
    /// Corrections.
    pub corrections: CorrectionCounts,
    /// Records read from the channel.
    pub records_read: u64,
    /// Items whose desired value could not be computed.
    pub plan_errors: u64,
    /// Why the channel could not be reconciled, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a dry run: what would be pushed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_push: Vec<WouldPush>,
    /// Differences caused by a source change that this run closed (confirmed by reading
    /// the channel back).
    #[serde(default)]
    pub source_changes_converged: u64,
    /// Of those, the median time from the pass first seeing the difference to its
    /// confirmation, in milliseconds (from the stored drift timestamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_ms_p50: Option<u64>,
    /// Of those, the longest time to converge, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_ms_max: Option<u64>,
}

/// One reconcile run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: i64,
    /// `full`, or the channel/SKUs it was limited to.
    pub scope: String,
    /// A dry run pushes nothing.
    pub dry_run: bool,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// `ok` or `failed`.
    pub status: String,
    /// Target and source channels.
    pub channels: Vec<ChannelReport>,
    /// Wall time per phase in milliseconds: `read`, `plan` (plan + store), `push`
    /// (push + read-back).
    #[serde(default)]
    pub phase_ms: BTreeMap<String, u64>,
    /// Orders in flight in this pass's scope.
    #[serde(default)]
    pub reservations: crate::reservations::ReservationCounts,
    /// Problems that are not one channel's (e.g. unmapped source locations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl ChannelReport {
    /// The values of [`COLUMNS`], consistency with `decimals` decimals.
    fn figures(&self, decimals: usize) -> Vec<String> {
        vec![
            self.id.clone(),
            self.kind.clone(),
            self.role.clone(),
            self.items_checked.to_string(),
            self.in_sync.to_string(),
            format!("{:.*}", decimals, self.consistency),
            self.drift.price.to_string(),
            self.drift.stock.to_string(),
            self.drift.missing.to_string(),
            self.drift.orphan.to_string(),
            self.corrections.queued.to_string(),
            self.corrections.sent.to_string(),
            self.corrections.confirmed.to_string(),
            self.corrections.failed.to_string(),
            self.corrections.held.to_string(),
        ]
    }
}

impl RunReport {
    /// Whether every target reached consistency 1.0 with nothing left to push.
    pub fn converged(&self) -> bool {
        self.status == "ok"
            && self
                .channels
                .iter()
                .filter(|c| c.role != "source")
                .all(|c| {
                    c.error.is_none() && c.items_checked == c.in_sync && c.corrections.queued == 0
                })
    }

    /// A terminal table.
    pub fn table(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(COLUMNS.iter().map(|(table, _)| *table).collect::<Vec<_>>());
        for c in &self.channels {
            t.add_row(c.figures(4));
        }
        let mut out = format!(
            "run {} ({}{}) {} → {} [{} ms] {}\n{t}\n",
            self.run_id,
            self.scope,
            if self.dry_run { ", dry run" } else { "" },
            self.started_at,
            self.finished_at,
            self.duration_ms,
            self.status,
        );
        for c in &self.channels {
            if !c.drift.by_cause.is_empty() {
                let causes: Vec<String> = c
                    .drift
                    .by_cause
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push_str(&format!("  {} drift causes: {}\n", c.id, causes.join(", ")));
            }
            if let (Some(p50), Some(max)) = (c.converge_ms_p50, c.converge_ms_max) {
                out.push_str(&format!(
                    "  {} converged after {} source changes: p50 {p50} ms, max {max} ms\n",
                    c.id, c.source_changes_converged
                ));
            }
            if let Some(e) = &c.error {
                out.push_str(&format!("  {} ERROR: {e}\n", c.id));
            }
            if !c.would_push.is_empty() {
                out.push_str(&format!(
                    "  {} would push {} corrections:\n",
                    c.id,
                    c.would_push.len()
                ));
                for w in c.would_push.iter().take(50) {
                    out.push_str(&format!(
                        "    {} {}{} {} -> {}{}\n",
                        w.sku,
                        w.field,
                        if w.location.is_empty() {
                            String::new()
                        } else {
                            format!("@{}", w.location)
                        },
                        w.observed.as_deref().unwrap_or("(none)"),
                        w.desired,
                        w.held
                            .as_deref()
                            .map(|h| format!(" [held: {h}]"))
                            .unwrap_or_default(),
                    ));
                }
                if c.would_push.len() > 50 {
                    out.push_str(&format!(
                        "    … and {} more (use --format json for all)\n",
                        c.would_push.len() - 50
                    ));
                }
            }
        }
        for p in &self.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
        out
    }

    /// CSV: one line per channel.
    pub fn csv(&self) -> Result<String, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["run_id"];
        header.extend(COLUMNS.iter().map(|(_, csv)| *csv));
        header.push("error");
        w.write_record(&header)?;
        for c in &self.channels {
            let mut row = vec![self.run_id.to_string()];
            row.extend(c.figures(6));
            row.push(c.error.clone().unwrap_or_default());
            w.write_record(&row)?;
        }
        let bytes = w.into_inner().map_err(|e| e.into_error())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> RunReport {
        RunReport {
            run_id: 7,
            status: "ok".into(),
            channels: vec![ChannelReport {
                id: "shop".into(),
                kind: "shopify".into(),
                role: "target/target".into(),
                items_checked: 4,
                in_sync: 3,
                consistency: 0.75,
                drift: DriftCounts {
                    price: 1,
                    ..Default::default()
                },
                error: Some("a, \"quoted\" reason".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn csv_has_one_line_per_channel_and_quotes_what_needs_it() {
        let csv = report().csv().unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with(
                "run_id,channel,kind,role,items_checked,in_sync,consistency,drift_price"
            )
        );
        assert!(lines[1].starts_with("7,shop,shopify,target/target,4,3,0.750000,1,"));
        assert!(lines[1].ends_with("\"a, \"\"quoted\"\" reason\""));
    }

    #[test]
    fn converged_means_every_target_consistent_and_nothing_queued() {
        let mut r = report();
        assert!(!r.converged());
        r.channels[0].in_sync = 4;
        r.channels[0].error = None;
        assert!(r.converged());
        r.channels[0].corrections.queued = 1;
        assert!(!r.converged());
        assert!(r.table().contains("0.7500"));
    }
}
