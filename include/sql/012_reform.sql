-- French e-invoicing reform (2026): what the ERP must hold for an invoice to pass the BR-FR rules
-- (Flux 2) and to print the mentions required since the reform.

-- Nature of each line: goods (« livraison de biens ») or services (« prestation de services »).
-- It gives the billing framework BT-23 (B1 goods, S1 services, M1 both) and the category of the
-- operation printed on the invoice. Lines already in the ERP count as services.
ALTER TABLE invoice_lines
    ADD COLUMN nature text NOT NULL DEFAULT 'service' CHECK (nature IN ('bien', 'service'));

-- The address under which the buyer receives e-invoices (BT-49), in the directory's scheme: 0225
-- (SIREN-based address: SIREN, SIREN_SIRET or SIREN_SIRET_routing code). Empty means the
-- customer's SIREN under 0225.
ALTER TABLE customers
    ADD COLUMN einvoicing_address varchar(125)
        CHECK (einvoicing_address ~ '^[A-Za-z0-9+._-]+$'),
    ADD COLUMN einvoicing_scheme varchar(4) NOT NULL DEFAULT '0225';

ALTER TABLE invoices
    -- A credit note cites the invoice it corrects (BT-25 number, BT-26 date; BR-FR-CO-05).
    ADD COLUMN credited_invoice_id bigint REFERENCES invoices (id),
    -- Delivery information (BG-13), when the ERP has it: actual delivery date (BT-72) and the
    -- delivery place when it differs from the buyer's address (BT-70, BG-15).
    ADD COLUMN delivery_date date,
    ADD COLUMN delivery_name text,
    ADD COLUMN delivery_address_line1 text,
    ADD COLUMN delivery_address_line2 text,
    ADD COLUMN delivery_postal_code text,
    ADD COLUMN delivery_city text,
    ADD COLUMN delivery_country char(2),
    ADD CONSTRAINT only_credit_notes_cite CHECK (credited_invoice_id IS NULL OR kind = 'avoir'),
    ADD CONSTRAINT delivery_address_complete CHECK (
        delivery_address_line1 IS NULL
        OR (delivery_postal_code IS NOT NULL AND delivery_city IS NOT NULL
            AND delivery_country IS NOT NULL));
CREATE INDEX invoices_credited ON invoices (credited_invoice_id) WHERE credited_invoice_id IS NOT NULL;

INSERT INTO settings (key, value, value_type, description) VALUES
    ('EMETTEUR_ADRESSE_ELECTRONIQUE', '732829320', 'text',
     'Adresse de réception des factures électroniques de l''émetteur (schéma 0225, à partir du SIREN)'),
    ('EMETTEUR_OPTION_DEBITS', 'false', 'bool',
     'L''émetteur a opté pour le paiement de la taxe d''après les débits (prestations de services)')
ON CONFLICT (key) DO NOTHING;
