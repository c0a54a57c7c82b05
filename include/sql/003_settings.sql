-- Business settings with their defaults ("Paramètres généraux / Paramètres / Gérer les paramètres").
-- Existing values are never overwritten.
INSERT INTO settings (key, value, value_type, description) VALUES
    ('ARCHIVAGE_FACTURES', 'true', 'bool', 'Archiver les factures envoyées (PDF signé) dans la GED'),
    ('DEMAT_ARTIS', 'true', 'bool', 'Dématérialisation Artis : courriel au client et mise à disposition sur le portail'),
    ('DEMAT_CHORUS', 'true', 'bool', 'Dématérialisation Chorus Pro pour les clients publics'),
    ('NB_JOURS_AVANT_ENVOI_FACTURES', '31', 'int', 'Envoi nocturne : factures prêtes créées depuis N jours'),
    ('COURRIEL_PIECE_JOINTE', 'false', 'bool', 'Joindre le PDF de la facture au courriel'),
    ('COURRIELS_PAR_MINUTE', '120', 'int', 'Limite d''envoi des courriels'),
    ('EMETTEUR_NOM', 'ARTIS', 'text', 'Raison sociale de l''émetteur'),
    ('EMETTEUR_FORME_JURIDIQUE', 'SAS', 'text', 'Forme juridique'),
    ('EMETTEUR_CAPITAL', '150 000 €', 'text', 'Capital social'),
    ('EMETTEUR_ADRESSE', '12 rue des Imprimeurs', 'text', 'Adresse'),
    ('EMETTEUR_CODE_POSTAL', '69002', 'text', 'Code postal'),
    ('EMETTEUR_VILLE', 'Lyon', 'text', 'Ville'),
    ('EMETTEUR_SIREN', '732829320', 'text', 'SIREN'),
    ('EMETTEUR_SIRET', '73282932000074', 'text', 'SIRET'),
    ('EMETTEUR_TVA', 'FR44732829320', 'text', 'Numéro de TVA intracommunautaire'),
    ('EMETTEUR_RCS', 'RCS Lyon B 732 829 320', 'text', 'Immatriculation RCS'),
    ('EMETTEUR_IBAN', 'FR7630006000011234567890189', 'text', 'IBAN de l''émetteur (virements)'),
    ('EMETTEUR_BIC', 'AGRIFRPPXXX', 'text', 'BIC de l''émetteur'),
    ('EMETTEUR_COURRIEL', 'contact@artis.fr', 'text', 'Adresse d''envoi des courriels'),
    ('EMETTEUR_SIGNATURE_COURRIEL', 'Service facturation', 'text', 'Signature des courriels'),
    ('PORTAIL_URL', 'https://portail.artis.fr/artis/', 'text', 'Adresse de l''espace client'),
    ('TAUX_PENALITES_RETARD', '10,15 %', 'text', 'Taux des pénalités de retard'),
    ('CONDITIONS_ESCOMPTE', 'Pas d''escompte pour paiement anticipé', 'text', 'Conditions d''escompte'),
    ('CHORUS_CODE_APPLICATION', 'POSTIE', 'text', 'Code application Chorus Pro (6 caractères)'),
    ('CHORUS_CODE_PARTENAIRE', 'AIFE01', 'text', 'Code application partenaire Chorus Pro (6 caractères)')
ON CONFLICT (key) DO NOTHING;
