"""A chunk's invoices as the documents and checks read them: every header column mapped to its
field, the enumerations typed, the delivery block only where the invoice has one, the order of
the ids asked (an unknown id left out)."""

from __future__ import annotations

from datetime import date

import psycopg
from builders import insert_customer, insert_invoice

from postier.domain.models import Address, CreditedInvoice, Delivery
from postier.domain.states import Channel, InvoiceKind, PaymentMode, SendState
from postier.store.invoices import load_invoices


def test_a_chunk_s_invoices_load_with_their_typed_fields_and_delivery_blocks(
    conn: psycopg.Connection,
) -> None:
    chorus = insert_customer(
        conn, channel="chorus", chorus_service_code="SERV1", iban="FR7630006000011234567890189"
    )
    plain = insert_invoice(conn)
    named = insert_invoice(conn, chorus, delivery_name="Entrepôt Nord")
    dated = insert_invoice(conn, chorus, delivery_date=date(2026, 11, 3), payment_mode="lcr")
    addressed = insert_invoice(
        conn,
        chorus,
        delivery_name="Chantier",
        delivery_address_line1="3 quai Ouest",
        delivery_postal_code="69002",
        delivery_city="Lyon",
        delivery_country="FR",
    )
    credit = insert_invoice(conn, chorus, kind="avoir", credited_invoice_id=plain)
    conn.execute("UPDATE invoices SET send_state = 'PRET' WHERE id = %s", (dated,))
    asked = [credit, addressed, 999_999_999, dated, named, plain]

    invoices = load_invoices(conn, asked)

    assert [i.id for i in invoices] == [credit, addressed, dated, named, plain]
    by_id = {i.id: i for i in invoices}
    assert by_id[plain].delivery is None
    assert by_id[named].delivery == Delivery(None, "Entrepôt Nord", None)
    assert by_id[dated].delivery == Delivery(date(2026, 11, 3), None, None)
    assert by_id[addressed].delivery == Delivery(
        None, "Chantier", Address("3 quai Ouest", None, "69002", "Lyon", "FR")
    )
    number, invoice_date = conn.execute(
        "SELECT number, invoice_date FROM invoices WHERE id = %s", (plain,)
    ).fetchone()  # type: ignore[misc]
    assert by_id[credit].credited_invoice == CreditedInvoice(number, invoice_date)
    assert by_id[plain].credited_invoice is None
    assert by_id[credit].kind is InvoiceKind.AVOIR and by_id[plain].kind is InvoiceKind.FACTURE
    assert by_id[dated].payment_mode is PaymentMode.LCR
    assert by_id[dated].send_state is SendState.PRET
    assert by_id[plain].send_state is SendState.EN_ATTENTE
    assert by_id[named].customer.channel is Channel.CHORUS
    assert by_id[plain].customer.channel is Channel.PORTAIL
    assert by_id[named].customer.chorus_service_code == "SERV1"
    assert by_id[named].customer.iban == "FR7630006000011234567890189"
    assert [ln.position for ln in by_id[plain].lines] == [1]
    assert by_id[plain].total_net == by_id[plain].lines[0].net_amount
