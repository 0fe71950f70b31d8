-- Orders in flight: units a channel sold that the source has not booked yet. They are taken
-- off every other channel at once, and released when the source's available stock falls by
-- the units (booked) or at the time-out.
CREATE TABLE reservations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    channel          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    line             BIGINT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    source_available BIGINT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    released_at      BIGINT,
    release_reason   TEXT,
    UNIQUE (channel, event_id, line)
);
CREATE INDEX reservations_open ON reservations (released_at, sku);
