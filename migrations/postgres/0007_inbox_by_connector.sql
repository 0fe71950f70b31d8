-- Pending webhook deliveries by connector (kept identical for SQLite and PostgreSQL): the
-- processor takes the sources' deliveries first, so that a burst of a target's webhooks
-- does not hold back the changes to spread.
CREATE INDEX webhook_inbox_connector ON webhook_inbox (status, connector, id);
