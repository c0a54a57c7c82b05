"""Values computed from an invoice that other runs rely on: the fingerprint a preparation
stored and a later send compares, and the VAT breakdown each document prints."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from postier.documents.samples import sample_invoice
from postier.store.invoices import fingerprint


def test_fingerprint_of_an_invoice_is_the_one_stored_by_earlier_versions() -> None:
    # Computed by the fingerprint as it was first stored (json.dumps(…, sort_keys=True)): an
    # invoice prepared before an upgrade and sent after must not read as « modifiée ».
    assert fingerprint(sample_invoice(0)) == (
        "e2b605ad796c0171e04ea23d51d8efd7b580a76e2854076ee18a3c9eb58caf86"
    )
    assert fingerprint(sample_invoice(42)) == (
        "9b6a6bc0818a940e0c0bf046d6162837590e0bfe187ec13ee96facb80c02c5da"
    )


def test_vat_breakdown_follows_the_lines_of_each_invoice_value() -> None:
    invoice = sample_invoice(3)
    first = invoice.vat_breakdown()
    first.clear()  # a caller's list is its own
    assert sum(v.amount for v in invoice.vat_breakdown()) == invoice.total_vat
    line = dataclasses.replace(invoice.lines[0], net_amount=Decimal("1000.00"))
    changed = dataclasses.replace(invoice, lines=(line,), total_net=Decimal("1000.00"))
    assert [(v.base, v.amount) for v in changed.vat_breakdown()] == [
        (Decimal("1000.00"), Decimal("1000.00") * line.vat_rate / 100)
    ]
