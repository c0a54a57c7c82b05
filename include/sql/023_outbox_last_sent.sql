-- When the last e-mail was handed to the SMTP server, for every deliverer (issue 13): the rate
-- (COURRIELS_PAR_MINUTE) is kept from it across deliveries (a retried chunk task, `rapport`,
-- another host), not only within one. Read as max(sent_at) at each delivery's start: an index,
-- not a scan of every message ever sent.
CREATE INDEX IF NOT EXISTS outbox_last_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
