-- An invoice deposited on our Plateforme Agréée is dematerialised through it, as Artis and Chorus
-- Pro invoices are through theirs (spec: « La facture sera marquée comme "Dématérialisée" »).

ALTER TABLE invoices DROP CONSTRAINT invoices_dematerialized_channel_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_dematerialized_channel_check
    CHECK (dematerialized_channel IN ('artis', 'chorus', 'plateforme'));
