-- Customer e-mails (spec « Courriel type suite à Envoyer »), delivered exactly once.
--
-- The send chunk records what must be mailed in its own transaction: an exchange row of kind
-- 'mise_a_disposition', status 'a_envoyer'. The delivery step then groups those rows by (run,
-- customer) into one `outbox` message, with its Message-ID, committed BEFORE any attempt; each
-- exchange row joins at most one message (UNIQUE exchange_id). A message is sent under its row
-- lock and marked 'envoye' in the same transaction, so a retry or a rerun finds it sent.

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES runs (id),
    customer_id     bigint NOT NULL REFERENCES customers (id),
    message_id      text NOT NULL UNIQUE,      -- RFC 5322 Message-ID, fixed before it leaves
    sender          text NOT NULL,
    recipients      text[] NOT NULL,
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text NOT NULL,
    attach_pdf      boolean NOT NULL,          -- COURRIEL_PIECE_JOINTE when composed
    status          text NOT NULL DEFAULT 'a_envoyer'
                    CHECK (status IN ('a_envoyer', 'envoye', 'en_erreur')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,                      -- French, for the report; never a secret
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    sent_by_run     bigint REFERENCES runs (id),  -- the run whose delivery step sent it
    transport       text                       -- 'smtp host:port' or the outbox folder
);
CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'a_envoyer';
CREATE INDEX outbox_run ON outbox (run_id);

-- The invoices a message announces: one exchange row (one invoice of one send) per message.
CREATE TABLE outbox_items (
    outbox_id       bigint NOT NULL REFERENCES outbox (id),
    exchange_id     bigint NOT NULL UNIQUE REFERENCES exchanges (id),
    invoice_id      bigint NOT NULL REFERENCES invoices (id),
    PRIMARY KEY (outbox_id, invoice_id)
);

CREATE INDEX exchanges_mail_to_compose ON exchanges (run_id)
    WHERE kind = 'mise_a_disposition' AND status = 'a_envoyer';
