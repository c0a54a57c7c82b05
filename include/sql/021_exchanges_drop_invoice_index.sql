-- exchanges_invoice (invoice_id) repeats the first column of exchanges_invoice_at (invoice_id,
-- at), which serves every look-up of an invoice's exchanges (its history, the lifecycle's
-- replays, the foreign key's checks when an invoice row goes): one index entry fewer written per
-- exchange row, one to three per invoice in a prepare or a send.
DROP INDEX IF EXISTS exchanges_invoice;
