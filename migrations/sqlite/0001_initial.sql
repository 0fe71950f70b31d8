-- omnisync schema, SQLite flavour. Kept column-for-column identical to the PostgreSQL
-- migration: only the auto-increment id syntax differs. Times are Unix milliseconds,
-- booleans are 0/1 integers, money is integer minor units: the same SQL runs on both.

CREATE TABLE items (
    sku         TEXT PRIMARY KEY,
    title       TEXT,
    price_minor BIGINT,
    currency    TEXT,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE item_stock (
    sku        TEXT NOT NULL,
    location   TEXT NOT NULL,
    available  BIGINT NOT NULL,
    on_hand    BIGINT,
    source     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (sku, location)
);

-- A channel's listing bound to a canonical SKU, with what it showed when last read.
CREATE TABLE bindings (
    channel     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    external_id TEXT NOT NULL,
    refs        TEXT NOT NULL,
    offer       TEXT,
    stock       TEXT,
    observed_at BIGINT NOT NULL,
    PRIMARY KEY (channel, sku)
);

-- Listings that map to no canonical item (never guessed by name).
CREATE TABLE orphans (
    channel     TEXT NOT NULL,
    external_id TEXT NOT NULL,
    sku         TEXT,
    reason      TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (channel, external_id)
);

-- Three-way state of every reconciled value: desired, observed, last pushed.
CREATE TABLE target_state (
    channel     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    field       TEXT NOT NULL,
    location    TEXT NOT NULL,
    desired     TEXT NOT NULL,
    observed    TEXT,
    pushed      TEXT,
    pushed_at   BIGINT,
    in_sync     BIGINT NOT NULL,
    cause       TEXT,
    drift_since BIGINT,
    checked_at  BIGINT NOT NULL,
    PRIMARY KEY (channel, sku, field, location)
);
CREATE INDEX target_state_open ON target_state (channel, in_sync);

CREATE TABLE drift_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    field       TEXT NOT NULL,
    location    TEXT NOT NULL,
    desired     TEXT NOT NULL,
    observed    TEXT,
    cause       TEXT,
    first_seen  BIGINT NOT NULL,
    resolved_at BIGINT NOT NULL
);
CREATE INDEX drift_history_sku ON drift_history (sku);

-- Durable, coalesced corrections: one row per (channel, sku, field, location).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT NOT NULL,
    sku             TEXT NOT NULL,
    field           TEXT NOT NULL,
    location        TEXT NOT NULL,
    value           TEXT NOT NULL,
    change          TEXT NOT NULL,
    external_id     TEXT,
    refs            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL,
    hold_reason     TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    run_id          BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (channel, sku, field, location)
);
CREATE INDEX outbox_due ON outbox (channel, status, next_attempt_at);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    field       TEXT NOT NULL,
    location    TEXT NOT NULL,
    value       TEXT NOT NULL,
    change      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    run_id      BIGINT,
    created_at  BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX dead_letters_open ON dead_letters (channel, resolved_at);

-- Every push outcome, for run figures and the item timeline.
CREATE TABLE push_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   BIGINT,
    channel  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    field    TEXT NOT NULL,
    location TEXT NOT NULL,
    value    TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT,
    at       BIGINT NOT NULL
);
CREATE INDEX push_log_run ON push_log (run_id, channel, outcome);
CREATE INDEX push_log_sku ON push_log (sku);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    scope       TEXT NOT NULL,
    dry_run     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    status      TEXT NOT NULL,
    report      TEXT
);
