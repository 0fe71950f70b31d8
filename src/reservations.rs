//! Orders in flight.
//!
//! When a target sells (an order webhook), the sold units are reserved: every other channel
//! drops by them at once (the planner subtracts them from available stock), and no channel is
//! pushed back *up* by units that are in flight — the selling channel already shows the sale.
//! A reservation is released when the source's available stock for the SKU has fallen by its
//! units since the reservation was first seen (the sale is booked), or at its time-out.

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

/// What a pass did with reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReservationCounts {
    /// Open after the pass (in scope).
    pub open: u64,
    /// Released because the source booked the sale.
    pub booked: u64,
    /// Released at the time-out.
    pub expired: u64,
}

fn db<T>(r: Result<T, sqlx::Error>, context: &str) -> Result<T, StoreError> {
    r.map_err(|source| StoreError::Db {
        context: context.to_string(),
        source,
    })
}

impl Store {
    /// Records sold lines; a line already recorded (same channel, event and line) is ignored,
    /// so a redelivered order reserves nothing twice. Returns how many were new.
    pub async fn reserve(
        &self,
        lines: &[SoldLine],
        now: i64,
        expires_at: i64,
    ) -> Result<u64, StoreError> {
        let mut new = 0;
        let mut tx = db(self.pool().begin().await, "reserving sold units")?;
        for l in lines.iter().filter(|l| l.quantity > 0) {
            let r = sqlx::query(
                "INSERT INTO reservations (channel, event_id, line, sku, quantity, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (channel, event_id, line) DO NOTHING",
            )
            .bind(l.channel.as_str())
            .bind(l.event_id.as_str())
            .bind(l.line)
            .bind(l.sku.as_str())
            .bind(l.quantity)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await;
            new += db(r, "reserving sold units")?.rows_affected();
        }
        db(tx.commit().await, "reserving sold units")?;
        Ok(new)
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
        let mut tx = db(self.pool().begin().await, "updating reservations")?;
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
    if persist {
        store
            .settle_reservations(&first_seen, &released, now)
            .await?;
    }
    Ok((flight, counts))
}
