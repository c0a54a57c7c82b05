"""A chunk's invoices as the documents and checks read them: every header column mapped to its
field, the enumerations typed, the delivery block only where the invoice has one, the order of
the ids asked (an unknown id left out)."""

from __future__ import annotations

import ast
import inspect
from datetime import UTC, date, datetime

import psycopg
from builders import insert_customer, insert_invoice
from psycopg.rows import dict_row

from postier.domain.models import Address, CreditedInvoice, Delivery
from postier.domain.states import Channel, InvoiceKind, PaymentMode, SendState
from postier.store import invoices
from postier.store.invoices import _HEADER, load_invoices


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


#: The fields of an invoice and of its customer that hold the header's column (`_HEADER`) of
#: their name; the customer's Chorus service code is its `customer_service_code`.
INVOICE_FIELDS = (
    "number", "invoice_date", "due_date", "batch_number", "created_by", "created_at",
    "total_net", "total_vat", "total_gross", "currency", "edited_at", "edited_by", "sent_at",
    "sent_by", "dematerialized", "chorus_service_code", "chorus_engagement_number",
)  # fmt: skip
CUSTOMER_FIELDS = (
    "code", "name", "contact_name", "siren", "siret", "vat_number", "iban", "bic",
    "chorus_service_required", "chorus_engagement_required", "einvoicing_address",
    "einvoicing_scheme",
)  # fmt: skip
ADDRESS_COLUMNS = ("address_line1", "address_line2", "postal_code", "city", "country")
DELIVERY_COLUMNS = tuple(f"delivery_{c}" for c in ADDRESS_COLUMNS)


def test_every_header_column_lands_in_the_field_of_its_name(conn: psycopg.Connection) -> None:
    # Every column set, each to a value no other column of its type has: a column read into
    # another's field (the header's tuple unpacked out of its order) shows.
    customer = insert_customer(
        conn,
        contact_name="Mme Martin",
        address_line2="Bâtiment B",
        country="BE",
        vat_number="FR40732829320",
        chorus_service_code="SERV-CLIENT",
        chorus_service_required=True,
        iban="FR7630006000011234567890189",
        bic="AGRIFRPP",
        einvoicing_address="732829320_SIRET",
        einvoicing_scheme="0009",
    )
    invoice = insert_invoice(
        conn,
        customer,
        currency="CHF",
        chorus_service_code="SERV-FACTURE",
        chorus_engagement_number="ENG-7",
        dematerialized=True,
        delivery_date=date(2026, 11, 5),
        delivery_name="Entrepôt",
        delivery_address_line1="3 quai Ouest",
        delivery_address_line2="Quai 4",
        delivery_postal_code="69002",
        delivery_city="Lyon",
        delivery_country="DE",
        edited_at=datetime(2026, 11, 3, 8, 0, tzinfo=UTC),
        edited_by="jmartin",
        sent_at=datetime(2026, 11, 4, 8, 0, tzinfo=UTC),
        sent_by="pdurand",
        send_state="PRET",
    )
    with conn.cursor(row_factory=dict_row) as cur:
        header = cur.execute(_HEADER, ([invoice],)).fetchone()
    assert header is not None

    (loaded,) = load_invoices(conn, [invoice])

    assert {f: getattr(loaded, f) for f in INVOICE_FIELDS} == {f: header[f] for f in INVOICE_FIELDS}
    customer_fields = {f: getattr(loaded.customer, f) for f in CUSTOMER_FIELDS}
    assert customer_fields == {f: header[f] for f in CUSTOMER_FIELDS}
    assert loaded.customer.chorus_service_code == header["customer_service_code"]
    assert loaded.customer.address == Address(*(header[c] for c in ADDRESS_COLUMNS))
    assert loaded.delivery == Delivery(
        header["delivery_date"],
        header["delivery_name"],
        Address(*(header[c] for c in DELIVERY_COLUMNS)),
    )
    assert loaded.payment_mode is PaymentMode(header["payment_mode"])


def header_unpacking() -> list[str]:
    """The names `load_invoices` unpacks each row of `_HEADER` into, in their order."""
    source = inspect.getsource(invoices.load_invoices)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.For) and "_HEADER" in ast.unparse(node.iter):
            assert isinstance(node.target, ast.Tuple)
            return [name.id for name in node.target.elts if isinstance(name, ast.Name)]
    raise AssertionError("load_invoices no longer loops over the rows of _HEADER")


def test_the_header_is_unpacked_in_the_order_of_its_columns(conn: psycopg.Connection) -> None:
    # A column added to `_HEADER` and to the unpacking at different places shifts every field
    # after it into its neighbour's (of the same type, nothing fails): each name unpacked must
    # be its column's, at its column's place.
    with conn.cursor() as cur:
        cur.execute(_HEADER, ([],))
        assert cur.description is not None
        columns = [column.name for column in cur.description]
    assert header_unpacking() == columns
