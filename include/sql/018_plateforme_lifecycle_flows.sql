-- Lifecycle flows (CDAR, flowType CustomerInvoiceLC) polled from the Plateforme Agréée by the
-- scheduled DAG `plateforme_cycle_de_vie`.
--
-- Each flow read is recorded once, by the PA's flowId, in the same transaction as the statuses it
-- carries (or its quarantine): a flow is never applied twice. The search watermark
-- (`updatedAfter` of POST /v1/flows/search) only moves in those transactions, and only past
-- flows that are recorded: a run that stops (PA down) leaves the rest for the next one.
CREATE TABLE plateforme_lifecycle_flows (
    flow_id     varchar(36) PRIMARY KEY,          -- Flow.flowId (NotOnlyUuid, ≤ 36)
    updated_at  timestamptz NOT NULL,             -- Flow.updatedAt on the PA
    status      text NOT NULL CHECK (status IN ('applique', 'quarantaine')),
    sha256      char(64),
    reason      text,
    run_id      bigint REFERENCES runs (id),
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quarantined_has_reason CHECK (status <> 'quarantaine' OR reason IS NOT NULL)
);

CREATE TABLE plateforme_lifecycle_watermark (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    updated_after timestamptz NOT NULL,
    moved_at      timestamptz NOT NULL DEFAULT now()
);
