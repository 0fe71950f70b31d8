-- Alerts, SQLite flavour. Kept column-for-column identical to the other flavour: only the
-- auto-increment id syntax differs. Times are Unix milliseconds.
--
-- One row per incident episode (open -> resolved), keyed by rule + channel (+ field),
-- never per SKU: item_count and a few example SKUs (JSON array) say how wide it is.
CREATE TABLE alert_incidents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_key TEXT NOT NULL,
    rule         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    channel      TEXT,
    field        TEXT,
    opened_at    BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    resolved_at  BIGINT,
    item_count   BIGINT NOT NULL,
    examples     TEXT NOT NULL,
    summary      TEXT NOT NULL
);
-- At most one open incident per key.
CREATE UNIQUE INDEX alert_incidents_open ON alert_incidents (incident_key) WHERE resolved_at IS NULL;
CREATE INDEX alert_incidents_key ON alert_incidents (incident_key, id);

-- What each notifier was last told about a key, so a restart (or a flap within the
-- cooldown) sends nothing twice: `told` is 'open' or 'resolved'; `open_sent_at` is the last
-- time an opening was announced, from which the cooldown counts.
CREATE TABLE alert_notices (
    incident_key TEXT NOT NULL,
    notifier     TEXT NOT NULL,
    told         TEXT NOT NULL CHECK (told IN ('open', 'resolved')),
    open_sent_at BIGINT,
    sent_at      BIGINT NOT NULL,
    PRIMARY KEY (incident_key, notifier)
);
