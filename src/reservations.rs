//! Orders in flight.
//!
//! When a target sells (an order webhook), the sold units are reserved: every other channel
//! drops by them at once (the planner subtracts them from available stock), and no channel is
//! pushed back *up* by units that are in flight — the selling channel already shows the sale.
//! A reservation is released when the source's available stock for the SKU has fallen by its
//! units since the reservation was first seen (the sale is booked), or at its time-out.
//!
//! A stock drop on a channel that the daemon did not cause (see
//! [`crate::planner::unexplained_drops`]) is reserved the same way, under an event id that
//! starts with [`DROP_EVENT`]; when the order behind it arrives later, the order's
//! reservation takes its units over instead of adding to them.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use crate::store::{Store, StoreError, values_list};

/// One open reservation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reservation {
    /// Row id.
    pub id: i64,
    /// The channel that sold.
    pub channel: String,
    /// The SKU.
    pub sku: String,
    /// Units sold.
    pub quantity: i64,
    /// The source's available units (all locations) when the reservation was first planned.
    pub source_available: Option<i64>,
    /// Created (ms).
    pub created_at: i64,
    /// Released at the latest at (ms).
    pub expires_at: i64,
}

/// One sold line to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoldLine {
    /// The selling channel.
    pub channel: String,
    /// The order event's id (with `line`, the idempotency key).
    pub event_id: String,
    /// The line's position in the event.
    pub line: i64,
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
}

/// The event id prefix of reservations made for stock drops (`stock-drop:{run id}`).
pub const DROP_EVENT: &str = "stock-drop:";

/// What a pass did with reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReservationCounts {
    /// Open after the pass (in scope).
    pub open: u64,
    /// Released because the source booked the sale.
    pub booked: u64,
    /// Released at the time-out.
    pub expired: u64,
    /// Made by this pass for stock drops the daemon did not cause (also counted in `open`).
    #[serde(default)]
    pub from_drops: u64,
}

fn db<T>(r: Result<T, sqlx::Error>, context: &str) -> Result<T, StoreError> {
    r.map_err(|source| StoreError::Db {
        context: context.to_string(),
        source,
    })
}

impl Store {
    /// Records sold lines; a line already recorded (same channel, event and line) is ignored,
    /// so a redelivered order reserves nothing twice. A new line takes over the units of open
    /// stock-drop reservations of its channel and SKU (the drop was this sale, seen before
    /// its order), with the source's stock they were first seen at. Returns how many were
    /// new.
    pub async fn reserve(
        &self,
        lines: &[SoldLine],
        now: i64,
        expires_at: i64,
    ) -> Result<u64, StoreError> {
        const WHAT: &str = "reserving sold units";
        let mut new = 0;
        let mut tx = db(self.begin_write().await, WHAT)?;
        for l in lines.iter().filter(|l| l.quantity > 0) {
            let seen = db(
                sqlx::query(
                    "SELECT 1 FROM reservations WHERE channel = $1 AND event_id = $2 AND line = $3",
                )
                .bind(l.channel.as_str())
                .bind(l.event_id.as_str())
                .bind(l.line)
                .fetch_optional(&mut *tx)
                .await,
                WHAT,
            )?;
            if seen.is_some() {
                continue;
            }
            // The drops this sale explains, oldest first.
            let drops = db(
                sqlx::query(
                    "SELECT id, quantity, source_available FROM reservations \
                     WHERE channel = $1 AND sku = $2 AND released_at IS NULL \
                     AND event_id LIKE 'stock-drop:%' ORDER BY id",
                )
                .bind(l.channel.as_str())
                .bind(l.sku.as_str())
                .fetch_all(&mut *tx)
                .await,
                WHAT,
            )?;
            let (mut left, mut first_seen) = (l.quantity, None);
            for d in drops {
                if left == 0 {
                    break;
                }
                let (id, units): (i64, i64) = (db(d.try_get(0), WHAT)?, db(d.try_get(1), WHAT)?);
                let available: Option<i64> = db(d.try_get(2), WHAT)?;
                first_seen = first_seen.or(available);
                let take = units.min(left);
                left -= take;
                let r = sqlx::query(
                    "UPDATE reservations SET quantity = quantity - $1, \
                     released_at = CASE WHEN quantity = $2 THEN $3 ELSE NULL END, \
                     release_reason = CASE WHEN quantity = $4 THEN 'its order arrived' ELSE NULL END \
                     WHERE id = $5",
                )
                .bind(take)
                .bind(take)
                .bind(now)
                .bind(take)
                .bind(id)
                .execute(&mut *tx)
                .await;
                db(r, WHAT)?;
            }
            // Another daemon on the same database may record the line first: nothing twice.
            let r = sqlx::query(
                "INSERT INTO reservations (channel, event_id, line, sku, quantity, source_available, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (channel, event_id, line) DO NOTHING",
            )
            .bind(l.channel.as_str())
            .bind(l.event_id.as_str())
            .bind(l.line)
            .bind(l.sku.as_str())
            .bind(l.quantity)
            .bind(first_seen)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await;
            new += db(r, WHAT)?.rows_affected();
        }
        db(tx.commit().await, WHAT)?;
        Ok(new)
    }

    /// Reserves stock drops found by pass `run_id` on `channel` (SKU → units), with the
    /// source's available units now (so the sale counts as booked once they fall by the
    /// units). Returns how many were made.
    pub async fn reserve_drops(
        &self,
        channel: &str,
        run_id: i64,
        drops: &BTreeMap<String, i64>,
        source_available: &HashMap<String, i64>,
        now: i64,
        expires_at: i64,
    ) -> Result<u64, StoreError> {
        const WHAT: &str = "reserving stock drops";
        let mut made = 0;
        let mut tx = db(self.begin_write().await, WHAT)?;
        let event = format!("{DROP_EVENT}{run_id}");
        for (line, (sku, units)) in drops.iter().filter(|(_, u)| **u > 0).enumerate() {
            let r = sqlx::query(
                "INSERT INTO reservations (channel, event_id, line, sku, quantity, source_available, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (channel, event_id, line) DO NOTHING",
            )
            .bind(channel)
            .bind(event.as_str())
            .bind(line as i64)
            .bind(sku.as_str())
            .bind(*units)
            .bind(source_available.get(sku).copied())
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await;
            made += db(r, WHAT)?.rows_affected();
        }
        db(tx.commit().await, WHAT)?;
        Ok(made)
    }

    /// Open reservations, for all SKUs or these.
    pub async fn open_reservations(
        &self,
        skus: Option<&[String]>,
    ) -> Result<Vec<Reservation>, StoreError> {
        let base = "SELECT id, channel, sku, quantity, source_available, created_at, expires_at \
                    FROM reservations WHERE released_at IS NULL";
        let mut rows = Vec::new();
        match skus {
            None => {
                rows = db(
                    sqlx::query(base).fetch_all(self.pool()).await,
                    "reading reservations",
                )?
            }
            Some(skus) => {
                for chunk in skus.chunks(500) {
                    let sql = format!("{base} AND sku IN {}", values_list(chunk.len(), 1));
                    let mut q = sqlx::query(self.dynamic(sql));
                    for s in chunk {
                        q = q.bind(s.as_str());
                    }
                    rows.extend(db(q.fetch_all(self.pool()).await, "reading reservations")?);
                }
            }
        }
        rows.iter()
            .map(|r| {
                Ok(Reservation {
                    id: db(r.try_get(0), "reading reservations")?,
                    channel: db(r.try_get(1), "reading reservations")?,
                    sku: db(r.try_get(2), "reading reservations")?,
                    quantity: db(r.try_get(3), "reading reservations")?,
                    source_available: db(r.try_get(4), "reading reservations")?,
                    created_at: db(r.try_get(5), "reading reservations")?,
                    expires_at: db(r.try_get(6), "reading reservations")?,
                })
            })
            .collect()
    }

    async fn settle_reservations(
        &self,
        first_seen: &[(i64, i64)],
        released: &[(i64, &'static str)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = db(self.begin_write().await, "updating reservations")?;
        for (id, available) in first_seen {
            let r = sqlx::query("UPDATE reservations SET source_available = $1 WHERE id = $2 AND source_available IS NULL")
                .bind(*available)
                .bind(*id)
                .execute(&mut *tx)
                .await;
            db(r, "updating reservations")?;
        }
        for (id, reason) in released {
            let r = sqlx::query("UPDATE reservations SET released_at = $1, release_reason = $2 WHERE id = $3 AND released_at IS NULL")
                .bind(now)
                .bind(*reason)
                .bind(*id)
                .execute(&mut *tx)
                .await;
            db(r, "releasing a reservation")?;
        }
        db(tx.commit().await, "updating reservations")
    }
}

/// Brings the reservations of these SKUs up to date against the source's available stock
/// (SKU → units over all locations), releasing what the source booked or what expired, and
/// returns the units still in flight per SKU (under the unplaced location key `""`). With
/// `persist` false (a dry run) nothing is written.
pub async fn in_flight(
    store: &Store,
    skus: Option<&[String]>,
    source_available: &HashMap<String, i64>,
    now: i64,
    persist: bool,
) -> Result<(HashMap<String, BTreeMap<String, i64>>, ReservationCounts), StoreError> {
    let open = store.open_reservations(skus).await?;
    let mut first_seen = Vec::new();
    let mut released = Vec::new();
    let mut counts = ReservationCounts::default();
    let mut flight: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for r in open {
        let available = source_available.get(&r.sku).copied();
        let booked = match (r.source_available, available) {
            (Some(then), Some(now_available)) => now_available <= then - r.quantity,
            _ => false,
        };
        if booked {
            released.push((r.id, "booked at the source"));
            counts.booked += 1;
        } else if now >= r.expires_at {
            released.push((r.id, "timed out"));
            counts.expired += 1;
        } else {
            if r.source_available.is_none()
                && let Some(a) = available
            {
                first_seen.push((r.id, a));
            }
            counts.open += 1;
            *flight
                .entry(r.sku)
                .or_default()
                .entry(String::new())
                .or_default() += r.quantity;
        }
    }
    if persist && !(first_seen.is_empty() && released.is_empty()) {
        store
            .settle_reservations(&first_seen, &released, now)
            .await?;
    }
    Ok((flight, counts))
}
