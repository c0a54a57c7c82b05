-- E-mail whose outcome is unknown (issue 9): a message is marked 'en_cours' and committed before
-- it is handed to the SMTP server. If the server's answer to the end of the message never comes
-- (timeout, connection lost) or the task dies meanwhile, the message may have been stored: it
-- becomes 'incertain', is reported, and is never sent again automatically; the clerk re-sends it
-- on purpose (`postier courriels renvoyer`).
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('a_envoyer', 'en_cours', 'envoye', 'incertain', 'en_erreur'));
ALTER TABLE outbox
    ADD COLUMN recipient_name text,            -- the customer's contact, shown in To:
    ADD COLUMN attempt_started_at timestamptz; -- when the current attempt was handed over
