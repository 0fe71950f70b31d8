-- Durable webhook inbox, SQLite flavour. Kept column-for-column identical to the PostgreSQL
-- migration: only the auto-increment id syntax differs. Times are Unix milliseconds.
--
-- A delivery is stored here after its signature passed and before it is answered 2xx; the
-- inbox processor turns `pending` rows into scoped reconcile passes and marks them `done`
-- afterwards (so a crash reprocesses them). `rejected`: signed but not understood (reason
-- says why). `duplicate` is reserved for settling a row as a repeat of an event already
-- handled; redeliveries of the same (connector, event_id) never get a second row (the
-- UNIQUE key): they are answered 200 and only counted.
CREATE TABLE webhook_inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    connector    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    topic        TEXT,
    received_at  BIGINT NOT NULL,
    headers      TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'done', 'rejected', 'duplicate')),
    reason       TEXT,
    processed_at BIGINT,
    UNIQUE (connector, event_id)
);
CREATE INDEX webhook_inbox_status ON webhook_inbox (status, id);
