-- Lifecycle statuses (CDAR, 200–214) of the invoices deposited on the Plateforme Agréée.
-- The current status lives on the flow, not on the invoice (a sent invoice is immutable): the
-- newest status wins, an older one arriving late never overwrites it. Every status received is
-- also an exchange-log row (kind 'cycle_de_vie'); a file refused is one with no invoice.
ALTER TABLE plateforme_flows
    ADD COLUMN lifecycle_status char(3) CHECK (lifecycle_status ~ '^2(0[0-9]|1[0-4])$'),
    ADD COLUMN lifecycle_at timestamptz,
    ADD COLUMN lifecycle_reason text,
    ADD COLUMN paid_at timestamptz,
    ADD CONSTRAINT lifecycle_is_dated CHECK (lifecycle_status IS NULL OR lifecycle_at IS NOT NULL);
