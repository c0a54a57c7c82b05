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

-- The record of changes is append-only, also for the task role that the pages connect as (it may
-- insert rows but owns nothing, so it cannot drop this trigger).
CREATE FUNCTION settings_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'l''historique des paramètres ne se modifie pas (% refusé)', TG_OP;
END $$;
CREATE TRIGGER settings_changes_append_only BEFORE UPDATE OR DELETE ON settings_changes
    FOR EACH ROW EXECUTE FUNCTION settings_changes_append_only();
CREATE TRIGGER settings_changes_no_truncate BEFORE TRUNCATE ON settings_changes
    FOR EACH STATEMENT EXECUTE FUNCTION settings_changes_append_only();
