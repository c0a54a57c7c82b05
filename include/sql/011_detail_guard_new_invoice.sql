-- Lines and due dates can no more be moved INTO a sent invoice than out of it: an UPDATE is
-- checked against both the invoice the row leaves (OLD) and the one it joins (NEW); an INSERT
-- against the one it joins. (002 checked OLD only on UPDATE.)
CREATE OR REPLACE FUNCTION postier_sent_invoice_detail_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv record;
BEGIN
    FOR inv IN
        SELECT number FROM invoices
        WHERE send_state = 'ENVOYE'
          AND id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.invoice_id END,
                     CASE WHEN TG_OP <> 'DELETE' THEN NEW.invoice_id END)
        ORDER BY id
        LIMIT 1
    LOOP
        RAISE EXCEPTION 'La facture % a été envoyée au destinataire : ses lignes et échéances ne sont plus modifiables.', inv.number
            USING ERRCODE = 'P0001';
    END LOOP;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
