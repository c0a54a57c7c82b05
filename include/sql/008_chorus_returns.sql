-- Chorus Pro return files read from the SFTP `out/` folder, one row per file received.
--
-- A file is applied in the same transaction that records it 'traite'; it is moved out of `out/`
-- only after that commit (then `moved_at` is stamped). The unique indexes make "applied twice"
-- impossible: the same name or the same content again is recorded 'doublon' and applies nothing.
-- A crash between the commit and the move leaves an applied row without `moved_at`: the next run
-- only finishes the move.

CREATE TABLE chorus_return_files (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    sha256          char(64) NOT NULL,
    size            bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    run_id          bigint REFERENCES runs (id),
    status          text NOT NULL
                    CHECK (status IN ('traite', 'doublon', 'quarantaine')),
    -- French, for the clerk: what was applied, or why the file went to quarantine.
    report          jsonb NOT NULL DEFAULT '{}',
    folder          text NOT NULL,          -- where the file goes: processed/ or quarantine/
    moved_at        timestamptz
);

CREATE UNIQUE INDEX chorus_return_files_applied_name
    ON chorus_return_files (name) WHERE status = 'traite';
CREATE UNIQUE INDEX chorus_return_files_applied_sha256
    ON chorus_return_files (sha256) WHERE status = 'traite';
CREATE INDEX chorus_return_files_run ON chorus_return_files (run_id);
CREATE INDEX chorus_return_files_sha256 ON chorus_return_files (sha256);

-- Rejections clear `chorus_deposited_at` so that `factures_chorus_recuperer` selects the
-- corrected invoice again; flow statuses find their invoices by the deposited flow name.
CREATE INDEX IF NOT EXISTS invoices_chorus_flow ON invoices (chorus_flow_name)
    WHERE chorus_flow_name IS NOT NULL;
