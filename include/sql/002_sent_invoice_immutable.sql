-- A sent invoice is immutable (spec: "La facture ne sera plus modifiable"). Only the fields that
-- later steps legitimately set stay writable: reprint stamps, dematerialisation and Chorus tracking.

CREATE FUNCTION postier_sent_invoice_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    writable CONSTANT text[] := ARRAY[
        'edited_at', 'edited_by', 'dematerialized', 'dematerialized_channel',
        'chorus_status', 'chorus_status_at', 'chorus_flow_name', 'chorus_deposited_at'];
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.send_state = 'ENVOYE' THEN
            RAISE EXCEPTION 'La facture % a été envoyée au destinataire : elle ne peut pas être supprimée.', OLD.number
                USING ERRCODE = 'P0001', HINT = 'Établissez un avoir pour l''annuler.';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.send_state = 'ENVOYE'
       AND (to_jsonb(NEW) - writable) IS DISTINCT FROM (to_jsonb(OLD) - writable) THEN
        RAISE EXCEPTION 'La facture % a été envoyée au destinataire : elle n''est plus modifiable.', OLD.number
            USING ERRCODE = 'P0001', HINT = 'Établissez un avoir pour la corriger.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER invoices_sent_immutable
    BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION postier_sent_invoice_guard();

-- Lines and due dates of a sent invoice are part of its content.
CREATE FUNCTION postier_sent_invoice_detail_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    target bigint := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    inv record;
BEGIN
    SELECT number, send_state INTO inv FROM invoices WHERE id = target;
    IF inv.send_state = 'ENVOYE' THEN
        RAISE EXCEPTION 'La facture % a été envoyée au destinataire : ses lignes et échéances ne sont plus modifiables.', inv.number
            USING ERRCODE = 'P0001';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER invoice_lines_sent_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION postier_sent_invoice_detail_guard();

CREATE TRIGGER invoice_due_dates_sent_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_due_dates
    FOR EACH ROW EXECUTE FUNCTION postier_sent_invoice_detail_guard();
