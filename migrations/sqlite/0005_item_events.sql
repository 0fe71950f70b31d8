-- Observed changes, SQLite flavour (kept column-for-column identical to the PostgreSQL
-- migration). One row each time a channel's value for a (SKU, field, location) is read back
-- different from what the previous pass stored: what it was, what it became, what it should
-- be and why it differs. With the push log and the drift history this is the item timeline
-- (`omnisync item SKU`). Pruned with the other history (`daemon.retention_days`).
CREATE TABLE item_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   BIGINT,
    channel  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    field    TEXT NOT NULL,
    location TEXT NOT NULL,
    kind     TEXT NOT NULL,
    value    TEXT,
    previous TEXT,
    desired  TEXT,
    in_sync  BIGINT NOT NULL,
    cause    TEXT,
    at       BIGINT NOT NULL
);
CREATE INDEX item_events_sku ON item_events (sku, at);
CREATE INDEX item_events_at ON item_events (at);
-- Retention and the item timeline look history up by time.
CREATE INDEX drift_history_resolved ON drift_history (resolved_at);
CREATE INDEX push_log_at ON push_log (at);
