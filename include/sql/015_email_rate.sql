-- E-mail rate: 120 a minute was a webmail's pace; a company SMTP relay or a transactional
-- e-mail service takes ten messages a second or more. The new default applies to databases
-- still on the old default; 0 now means no limit.
UPDATE settings
   SET value = '600'
 WHERE key = 'COURRIELS_PAR_MINUTE' AND value = '120';
UPDATE settings
   SET description = 'Limite d''envoi des courriels par minute (0 : sans limite)'
 WHERE key = 'COURRIELS_PAR_MINUTE';
