-- The invoices a run selected, split into chunks, with what happened to each. Tasks pass only
-- (run id, chunk number); a retried chunk redoes only its items still 'a_traiter'.
CREATE TABLE run_items (
    run_id      bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    invoice_id  bigint NOT NULL REFERENCES invoices (id),
    position    integer NOT NULL,        -- selection order (the print order)
    chunk       integer NOT NULL,
    status      text NOT NULL DEFAULT 'a_traiter'
                CHECK (status IN ('a_traiter', 'traitee', 'ignoree', 'en_erreur')),
    reason      text,
    output      text,                    -- file produced for this invoice, if any
    done_at     timestamptz,
    PRIMARY KEY (run_id, invoice_id)
);
CREATE INDEX run_items_chunk ON run_items (run_id, chunk, status);

ALTER TABLE runs ADD COLUMN status text NOT NULL DEFAULT 'en_cours'
    CHECK (status IN ('en_cours', 'terminee', 'refusee', 'en_erreur'));
ALTER TABLE runs ADD COLUMN chunk_size integer;
ALTER TABLE runs ADD COLUMN output_dir text;
