-- Postier schema: the ERP tables Postier reads and the journals it writes.
-- Migrations are applied in file-name order by `postier db migrate`, each once.

CREATE TABLE customers (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code                varchar(20) NOT NULL UNIQUE,
    name                text NOT NULL,
    contact_name        text,
    address_line1       text NOT NULL,
    address_line2       text,
    postal_code         text NOT NULL,
    city                text NOT NULL,
    country             char(2) NOT NULL DEFAULT 'FR',
    emails              text[] NOT NULL DEFAULT '{}',
    siren               char(9),
    siret               char(14),
    vat_number          varchar(20),
    channel             text NOT NULL DEFAULT 'papier'
                        CHECK (channel IN ('portail', 'chorus', 'papier')),
    -- Chorus Pro: the public buyer's service code and what it requires on each invoice.
    chorus_service_code         varchar(100),
    chorus_service_required     boolean NOT NULL DEFAULT false,
    chorus_engagement_required  boolean NOT NULL DEFAULT false,
    -- Bank details of the drawee, printed on bills of exchange (LCR).
    iban                varchar(34),
    bic                 varchar(11)
);

CREATE TABLE invoices (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number              varchar(20) NOT NULL UNIQUE,
    kind                text NOT NULL DEFAULT 'facture' CHECK (kind IN ('facture', 'avoir')),
    customer_id         bigint NOT NULL REFERENCES customers (id),
    invoice_date        date NOT NULL,
    due_date            date NOT NULL,
    batch_number        integer NOT NULL CHECK (batch_number >= 0),
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    payment_mode        text NOT NULL
                        CHECK (payment_mode IN ('virement', 'cheque', 'lcr', 'billet_ordre',
                                                'prelevement', 'carte')),
    total_net           numeric(14, 2) NOT NULL,
    total_vat           numeric(14, 2) NOT NULL,
    total_gross         numeric(14, 2) NOT NULL,
    currency            char(3) NOT NULL DEFAULT 'EUR',
    send_state          text NOT NULL DEFAULT 'EN_ATTENTE'
                        CHECK (send_state IN ('EN_ATTENTE', 'PRET', 'ENVOYE', 'CONSERVE_INTERNE')),
    state_changed_at    timestamptz,
    state_changed_by    text,
    edited_at           timestamptz,
    edited_by           text,
    sent_at             timestamptz,
    sent_by             text,
    dematerialized      boolean NOT NULL DEFAULT false,
    dematerialized_channel text CHECK (dematerialized_channel IN ('artis', 'chorus')),
    chorus_service_code      varchar(100),
    chorus_engagement_number varchar(50),
    chorus_status       varchar(2),
    chorus_status_at    timestamptz,
    chorus_flow_name    text,
    chorus_deposited_at timestamptz,
    -- sha256 of the invoice content (header, lines, due dates) as prepared; see store.invoices.
    fingerprint         char(64),
    CONSTRAINT totals_add_up CHECK (total_gross = total_net + total_vat),
    CONSTRAINT sent_is_stamped CHECK (send_state <> 'ENVOYE' OR (sent_at IS NOT NULL AND sent_by IS NOT NULL))
);

CREATE TABLE invoice_lines (
    invoice_id          bigint NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position            smallint NOT NULL,
    description         text NOT NULL,
    quantity            numeric(12, 3) NOT NULL,
    unit                varchar(10) NOT NULL DEFAULT 'U',
    unit_price          numeric(14, 4) NOT NULL,
    vat_rate            numeric(5, 2) NOT NULL,
    net_amount          numeric(14, 2) NOT NULL,
    PRIMARY KEY (invoice_id, position)
);

CREATE TABLE invoice_due_dates (
    invoice_id          bigint NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position            smallint NOT NULL,
    due_date            date NOT NULL,
    amount              numeric(14, 2) NOT NULL,
    PRIMARY KEY (invoice_id, position)
);

CREATE TABLE settings (
    key                 text PRIMARY KEY,
    value               text NOT NULL,
    value_type          text NOT NULL CHECK (value_type IN ('bool', 'int', 'text')),
    description         text NOT NULL
);

CREATE TABLE runs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    treatment           text NOT NULL,
    external_id         text UNIQUE,          -- Airflow dag_id/run_id: a rerun finds its row
    criteria            jsonb NOT NULL,
    triggered_by        text NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    counts              jsonb NOT NULL DEFAULT '{}',
    report              jsonb
);

CREATE TABLE exchanges (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id          bigint REFERENCES invoices (id),
    run_id              bigint REFERENCES runs (id),
    kind                text NOT NULL,        -- changement_etat, ged, courriel, export_chorus, retour_chorus
    partner             text NOT NULL,        -- ARTIS, GED, CLIENT, CHORUS
    status              text NOT NULL,
    report              jsonb NOT NULL DEFAULT '{}',
    at                  timestamptz NOT NULL DEFAULT now(),
    by                  text NOT NULL
);

CREATE TABLE documents (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id          bigint NOT NULL REFERENCES invoices (id),
    kind                text NOT NULL,        -- facture, traite, facturx
    sha256              char(64) NOT NULL,
    size                bigint NOT NULL,
    location            text NOT NULL,
    signed              boolean NOT NULL,
    at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, kind)
);

-- Selection indexes. The clerk's default print query filters on state, "never edited" and
-- "not dematerialised", and is ordered by number; the other criteria each have their own.
CREATE INDEX invoices_state_batch ON invoices (send_state, batch_number);
CREATE INDEX invoices_unedited ON invoices (send_state, number)
    WHERE edited_at IS NULL AND NOT dematerialized;
CREATE INDEX invoices_invoice_date ON invoices (invoice_date);
CREATE INDEX invoices_edited_at ON invoices (edited_at);
CREATE INDEX invoices_created_by ON invoices (created_by);
CREATE INDEX invoices_edited_by ON invoices (edited_by);
CREATE INDEX invoices_created_at ON invoices (send_state, created_at);
CREATE INDEX invoices_customer ON invoices (customer_id);
CREATE INDEX exchanges_invoice ON exchanges (invoice_id);
CREATE INDEX exchanges_run ON exchanges (run_id);
