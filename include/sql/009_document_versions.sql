-- Versions of an invoice's archived documents, and which one each Chorus deposit carried.
--
-- A sent invoice is immutable, but after a Chorus Pro rejection for routing data (status 04:
-- service code, engagement number, buyer SIRET, which belong to the customer) the next
-- collection deposits a newly generated and signed document. It is archived beside the first as
-- version 2 (then 3…): both are kept, write-once, and `deposited_at` says which one was deposited
-- when; `chorus_flow_invoices.document_id` names the exact document of every deposit.

ALTER TABLE documents ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
-- French, for the clerk: why this version exists (the send, an archive before a deposit, a
-- new deposit after a rejection).
ALTER TABLE documents ADD COLUMN reason text NOT NULL DEFAULT 'envoi';
ALTER TABLE documents ADD COLUMN deposited_at timestamptz;
ALTER TABLE documents DROP CONSTRAINT documents_invoice_id_kind_key;
ALTER TABLE documents ADD CONSTRAINT documents_invoice_kind_version UNIQUE (invoice_id, kind, version);

ALTER TABLE chorus_flow_invoices ADD COLUMN document_id bigint REFERENCES documents (id);

-- Deposits made before this migration took the archived document when there was one.
UPDATE documents d SET deposited_at = f.deposited_at
FROM chorus_flow_invoices fi JOIN chorus_flows f ON f.id = fi.flow_id
WHERE fi.invoice_id = d.invoice_id AND d.kind = 'facture' AND f.status = 'deposee';
