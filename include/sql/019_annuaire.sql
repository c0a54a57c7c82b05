-- The directory (« annuaire ») of the e-invoicing reform: where a buyer receives e-invoices.
--
-- directory_lookups: what the Directory Service answered for a buyer (SIREN, and the SIRET we
-- know of it, '' when none), with the date of the look-up. Only found addresses are kept: a
-- buyer absent from the directory is asked again at the next preparation (it may have joined).
CREATE TABLE directory_lookups (
    siren           char(9) NOT NULL CHECK (siren ~ '^[0-9]{9}$'),
    siret           varchar(14) NOT NULL DEFAULT '',
    address         varchar(125) NOT NULL,        -- addressingIdentifier of the line that applies
    line_siret      varchar(14),                  -- the line's own SIRET / routing code, if any
    line_routing    varchar(100),
    looked_up_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (siren, siret)
);

-- The buyer's address (BT-49) each prepared `plateforme` invoice was made with, and where it
-- came from: the customer's data (« fiche client ») or the directory, with the date it was
-- consulted. The send renders and reports with the same address.
CREATE TABLE invoice_einvoicing_addresses (
    invoice_id      bigint PRIMARY KEY REFERENCES invoices (id),
    address         varchar(125) NOT NULL,
    source          text NOT NULL CHECK (source IN ('fiche_client', 'annuaire')),
    consulted_at    timestamptz,
    CONSTRAINT directory_has_date CHECK (source <> 'annuaire' OR consulted_at IS NOT NULL)
);
