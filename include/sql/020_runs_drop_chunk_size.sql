-- runs.chunk_size was written by the selection and read by nothing; since chunks share the
-- run's expected work (an invoice counts 1 plus a little per line), their sizes vary and one
-- size per run misleads. A chunk's invoices are its run_items rows.
ALTER TABLE runs DROP COLUMN chunk_size;
