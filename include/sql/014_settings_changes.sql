-- Every change of a business setting made from the « Paramètres » page: who, when, old → new.
-- Append-only: the page inserts the change and updates `settings` in one transaction.
CREATE TABLE settings_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         text NOT NULL REFERENCES settings (key),
    old_value   text NOT NULL,
    new_value   text NOT NULL,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settings_changes_at ON settings_changes (changed_at DESC);

-- The reports page filters runs by treatment, status and who, newest first (keyset on id).
CREATE INDEX IF NOT EXISTS runs_treatment ON runs (treatment, id);
CREATE INDEX IF NOT EXISTS runs_triggered_by ON runs (triggered_by, id);
CREATE INDEX IF NOT EXISTS exchanges_invoice_at ON exchanges (invoice_id, at);
