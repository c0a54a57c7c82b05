-- A chunk's one UPDATE of its run items sets their status, reason, output and done_at. With
-- `status` in `run_items_chunk` none of these updates could be HOT: each wrote a new entry in
-- both of the table's indexes, and its new row version went to another page (the rows are
-- inserted packed), with a lock record and often a full-page image in the WAL. The chunk's
-- reads (`pending_ids`, `claim_chunk`, `still_pending`, `pending_chunks`) find a chunk's few
-- hundred items on (run_id, chunk) and check their status on the rows.
DROP INDEX IF EXISTS run_items_chunk;
CREATE INDEX IF NOT EXISTS run_items_run_chunk ON run_items (run_id, chunk);
-- An item grows from ≈ 70 to ≈ 200 bytes (its file's location) when its outcome is recorded,
-- in one statement for all the chunk's items: pages filled to 25 % keep room for every row's
-- new version beside the old one (HOT), and hold the recorded items at ≈ 70 %. Applies to the
-- pages written from now on.
ALTER TABLE run_items SET (fillfactor = 25);
