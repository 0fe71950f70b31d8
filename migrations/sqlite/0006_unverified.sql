-- Pushes not read back yet (kept identical for SQLite and PostgreSQL). A webhook pass plans
-- the channels that did not send the webhook from what they last showed, pushes, and takes
-- an applied write as shown without reading it back at once: `unverified = 1` marks such a
-- value until a read of the channel confirms it (the processor's verify pass, or any later
-- pass that reads it). A read that finds it different calls the difference `write_no_op`.
ALTER TABLE target_state ADD COLUMN unverified BIGINT NOT NULL DEFAULT 0;
CREATE INDEX target_state_unverified ON target_state (unverified, channel);
-- The alert rules count open drift per channel and field and fetch a few example SKUs by age.
CREATE INDEX target_state_drift ON target_state (in_sync, channel, field, drift_since, sku);
