-- Chorus Pro EDI deposits (treatment factures_chorus_recuperer).
--
-- Exactly once: a flow is recorded here ('preparee', with its file kept on disk) and its invoices
-- stamped with `chorus_flow_name` in one transaction BEFORE the upload; the upload (temporary
-- name, then rename) is idempotent by flow name; the flow becomes 'deposee' and the invoices get
-- `chorus_deposited_at` after it. A retried or later run finding a 'preparee' flow uploads the
-- same file again under the same name instead of building a new flow.

-- Flow sequence numbers: 15 digits in the file name, unique forever, never recycled.
CREATE SEQUENCE chorus_flow_sequence AS bigint
    MINVALUE 1 MAXVALUE 999999999999999 NO CYCLE;

CREATE TABLE chorus_flows (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,     -- FSO1117A_<app>_<app>1117<sequence 15>
    sequence        bigint NOT NULL UNIQUE,
    interface       char(8) NOT NULL,
    run_id          bigint REFERENCES runs (id),
    status          text NOT NULL DEFAULT 'preparee'
                    CHECK (status IN ('preparee', 'deposee')),
    file_path       text NOT NULL,            -- the exact bytes to (re)upload
    sha256          char(64) NOT NULL,
    size            bigint NOT NULL,
    invoice_count   integer NOT NULL CHECK (invoice_count > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    deposited_at    timestamptz,
    CONSTRAINT deposited_is_stamped CHECK (status <> 'deposee' OR deposited_at IS NOT NULL)
);

-- The invoices of each flow, in packing order (the Chorus returns name flows and invoices).
CREATE TABLE chorus_flow_invoices (
    flow_id         bigint NOT NULL REFERENCES chorus_flows (id),
    invoice_id      bigint NOT NULL REFERENCES invoices (id),
    position        integer NOT NULL,
    file_name       text NOT NULL,            -- name of the PDF inside the flow
    PRIMARY KEY (flow_id, invoice_id)
);
CREATE INDEX chorus_flow_invoices_invoice ON chorus_flow_invoices (invoice_id);
CREATE INDEX chorus_flows_pending ON chorus_flows (status) WHERE status <> 'deposee';
CREATE INDEX invoices_chorus_pending ON invoices (send_state)
    WHERE chorus_deposited_at IS NULL;
