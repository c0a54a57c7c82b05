"""Load whole invoices (header, customer, lines, due dates) for a chunk: three queries, not 3×N."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from postier.domain.models import (
    Address,
    CreditedInvoice,
    Customer,
    Delivery,
    DueDate,
    Invoice,
    InvoiceLine,
)
from postier.domain.states import Channel, InvoiceKind, LineNature, PaymentMode, SendState

_HEADER = """
SELECT i.id, i.number, i.kind, i.invoice_date, i.due_date, i.batch_number, i.created_by,
       i.created_at, i.payment_mode, i.total_net, i.total_vat, i.total_gross, i.currency,
       i.send_state, i.edited_at, i.edited_by, i.sent_at, i.sent_by, i.dematerialized,
       i.chorus_service_code, i.chorus_engagement_number,
       o.number AS credited_number, o.invoice_date AS credited_date,
       i.delivery_date, i.delivery_name, i.delivery_address_line1, i.delivery_address_line2,
       i.delivery_postal_code, i.delivery_city, i.delivery_country,
       c.code, c.name, c.contact_name, c.address_line1, c.address_line2, c.postal_code, c.city,
       c.country, c.emails, c.siren, c.siret, c.vat_number, c.channel,
       c.chorus_service_code AS customer_service_code, c.chorus_service_required,
       c.chorus_engagement_required, c.iban, c.bic, c.einvoicing_address, c.einvoicing_scheme
FROM invoices i JOIN customers c ON c.id = i.customer_id
     LEFT JOIN invoices o ON o.id = i.credited_invoice_id
WHERE i.id = ANY(%s)
"""


_NATURES = {n.value: n for n in LineNature}


def load_invoices(conn: psycopg.Connection, invoice_ids: Sequence[int]) -> list[Invoice]:
    """The invoices in the order of `invoice_ids` (missing ids are left out)."""
    ids = list(invoice_ids)
    lines: dict[int, list[InvoiceLine]] = defaultdict(list)
    # Rows fetched at once (not one cursor step per row), line natures found in a dict (not one
    # Enum call per line): ≈ 10 % less Python per invoice loaded.
    for r in conn.execute(
        "SELECT invoice_id, position, description, quantity, unit, unit_price, vat_rate, "
        "net_amount, nature FROM invoice_lines WHERE invoice_id = ANY(%s) "
        "ORDER BY invoice_id, position",
        (ids,),
    ).fetchall():
        position, description, quantity, unit, unit_price, vat_rate, net, nature = r[1:]
        lines[r[0]].append(
            InvoiceLine(
                position,
                description,
                quantity,
                unit,
                unit_price,
                vat_rate,
                net,
                _NATURES[nature],
            )
        )
    due: dict[int, list[DueDate]] = defaultdict(list)
    for r in conn.execute(
        "SELECT invoice_id, due_date, amount FROM invoice_due_dates "
        "WHERE invoice_id = ANY(%s) ORDER BY invoice_id, position",
        (ids,),
    ).fetchall():
        due[r[0]].append(DueDate(r[1], r[2]))
    by_id: dict[int, Invoice] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for h in cur.execute(_HEADER, (ids,)).fetchall():
            customer = Customer(
                code=h["code"],
                name=h["name"],
                contact_name=h["contact_name"],
                address=Address(
                    h["address_line1"],
                    h["address_line2"],
                    h["postal_code"],
                    h["city"],
                    h["country"],
                ),
                emails=tuple(h["emails"] or ()),
                channel=Channel(h["channel"]),
                siren=h["siren"],
                siret=h["siret"],
                vat_number=h["vat_number"],
                chorus_service_code=h["customer_service_code"],
                chorus_service_required=h["chorus_service_required"],
                chorus_engagement_required=h["chorus_engagement_required"],
                iban=h["iban"],
                bic=h["bic"],
                einvoicing_address=h["einvoicing_address"],
                einvoicing_scheme=h["einvoicing_scheme"],
            )
            by_id[h["id"]] = Invoice(
                id=h["id"],
                number=h["number"],
                kind=InvoiceKind(h["kind"]),
                customer=customer,
                invoice_date=h["invoice_date"],
                due_date=h["due_date"],
                batch_number=h["batch_number"],
                created_by=h["created_by"],
                created_at=h["created_at"],
                payment_mode=PaymentMode(h["payment_mode"]),
                total_net=h["total_net"],
                total_vat=h["total_vat"],
                total_gross=h["total_gross"],
                currency=h["currency"],
                send_state=SendState(h["send_state"]),
                lines=tuple(lines.get(h["id"], ())),
                due_dates=tuple(due.get(h["id"], ())),
                edited_at=h["edited_at"],
                edited_by=h["edited_by"],
                sent_at=h["sent_at"],
                sent_by=h["sent_by"],
                dematerialized=h["dematerialized"],
                chorus_service_code=h["chorus_service_code"],
                chorus_engagement_number=h["chorus_engagement_number"],
                credited_invoice=(
                    CreditedInvoice(h["credited_number"], h["credited_date"])
                    if h["credited_number"]
                    else None
                ),
                delivery=_delivery(h),
            )
    return [by_id[i] for i in ids if i in by_id]


def _delivery(h: dict[str, Any]) -> Delivery | None:
    address = None
    if h["delivery_address_line1"]:
        address = Address(
            h["delivery_address_line1"],
            h["delivery_address_line2"],
            h["delivery_postal_code"],
            h["delivery_city"],
            h["delivery_country"],
        )
    if h["delivery_date"] is None and address is None and not h["delivery_name"]:
        return None
    return Delivery(h["delivery_date"], h["delivery_name"], address)


#: `json.dumps(…, sort_keys=True)` without building an encoder per call (the same text).
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, check_circular=False)


def fingerprint(invoice: Invoice) -> str:
    """sha256 of what the customer sees (header, lines, due dates): detects later edits.
    Stored by the preparation and compared by the send: its text must never change."""
    content = {
        "number": invoice.number,
        "kind": invoice.kind.value,
        "customer": invoice.customer.code,
        "date": invoice.invoice_date.isoformat(),
        "due": invoice.due_date.isoformat(),
        "mode": invoice.payment_mode.value,
        "totals": [str(invoice.total_net), str(invoice.total_vat), str(invoice.total_gross)],
        "lines": [
            [
                ln.description,
                str(ln.quantity),
                ln.unit,
                str(ln.unit_price),
                str(ln.vat_rate),
                str(ln.net_amount),
                ln.nature.value,
            ]
            for ln in invoice.lines
        ],
        "schedule": [[d.due_date.isoformat(), str(d.amount)] for d in invoice.due_dates],
        "credited": invoice.credited_invoice and invoice.credited_invoice.number,
        "delivery": repr(invoice.delivery),
    }
    return hashlib.sha256(_FINGERPRINT_JSON.encode(content).encode()).hexdigest()
