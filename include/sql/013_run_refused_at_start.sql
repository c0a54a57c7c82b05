-- A run refused at its start because its criteria are invalid still has its row and its report
-- (« refusé : critères invalides »), so that it shows in « Rapports Postier ».
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('en_cours', 'terminee', 'refusee', 'en_erreur', 'criteres_invalides'));
