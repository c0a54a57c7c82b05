-- The fourth channel: B2B invoices deposited on our Plateforme Agréée (AFNOR XP Z12-013 Flow API).
--
-- Exactly once: a flow is recorded here ('preparee', with its trackingId and the sha256 of the
-- exact bytes) in its own transaction BEFORE the upload. A retry or a later run that finds a
-- 'preparee' row does not upload blindly: it first asks the PA for the trackingId
-- (POST /v1/flows/search) and only deposits when the PA has no such flow.
ALTER TABLE customers DROP CONSTRAINT customers_channel_check;
ALTER TABLE customers ADD CONSTRAINT customers_channel_check
    CHECK (channel IN ('portail', 'chorus', 'papier', 'plateforme'));

CREATE TABLE plateforme_flows (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id      bigint NOT NULL UNIQUE REFERENCES invoices (id),
    tracking_id     varchar(36) NOT NULL UNIQUE,  -- FlowInfo.trackingId: stable id of the invoice
    document_id     bigint REFERENCES documents (id),
    file_name       text NOT NULL,
    sha256          char(64) NOT NULL,
    status          text NOT NULL DEFAULT 'preparee'
                    CHECK (status IN ('preparee', 'deposee', 'refusee')),
    flow_id         varchar(36),                  -- the PA's flowId once deposited
    reason          text,                         -- the PA's refusal, in the clerk's words
    run_id          bigint REFERENCES runs (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    deposited_at    timestamptz,
    CONSTRAINT deposited_has_flow CHECK (status <> 'deposee' OR (flow_id IS NOT NULL
                                                                AND deposited_at IS NOT NULL)),
    CONSTRAINT refused_has_reason CHECK (status <> 'refusee' OR reason IS NOT NULL)
);
CREATE INDEX plateforme_flows_pending ON plateforme_flows (status) WHERE status = 'preparee';
