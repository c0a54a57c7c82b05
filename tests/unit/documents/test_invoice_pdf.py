from __future__ import annotations

from decimal import Decimal

from pdf_reading import money, pdf_text

from postier.documents import render_invoice
from postier.documents.samples import sample_invoice
from postier.domain.models import Seller
from postier.domain.money import format_rate
from postier.domain.states import InvoiceKind, PaymentMode


def test_invoice_shows_number_customer_totals_in_french_format(seller: Seller) -> None:
    invoice = sample_invoice(3, lines=6)
    text = "\n".join(pdf_text(render_invoice(invoice, seller)))
    assert "FACTURE" in text
    assert invoice.number in text
    assert invoice.customer.name in text
    assert invoice.customer.code in text
    for amount in (invoice.total_net, invoice.total_vat, invoice.total_gross):
        assert money(amount) in text
    assert "\u202f" in money(invoice.total_gross)  # thousands separator really tested


def test_invoice_lists_one_vat_line_per_rate(seller: Seller) -> None:
    invoice = sample_invoice(3, lines=12)
    breakdown = invoice.vat_breakdown()
    assert len(breakdown) >= 2
    text = "\n".join(pdf_text(render_invoice(invoice, seller)))
    for vat in breakdown:
        assert format_rate(vat.rate).replace("\xa0", " ") in text
        assert money(vat.base) in text
        assert money(vat.amount) in text


def test_invoice_carries_legal_mentions_and_seller_identity(seller: Seller) -> None:
    text = "\n".join(pdf_text(render_invoice(sample_invoice(1), seller)))
    assert seller.late_penalty_rate in text
    assert "indemnité forfaitaire pour frais de recouvrement de 40 €" in text
    assert seller.discount_terms in text
    for mention in (seller.siret, seller.vat_number, seller.rcs, seller.capital):
        assert mention in text


def test_transfer_invoice_shows_bank_details_cheque_does_not(seller: Seller) -> None:
    transfer = "\n".join(pdf_text(render_invoice(sample_invoice(1), seller)))
    cheque = "\n".join(
        pdf_text(render_invoice(sample_invoice(1, payment_mode=PaymentMode.CHEQUE), seller))
    )
    assert "BIC " + seller.bic in transfer
    assert "Virement" in transfer
    assert "BIC " + seller.bic not in cheque
    assert "Chèque" in cheque


def test_credit_note_is_titled_avoir(seller: Seller) -> None:
    text = "\n".join(pdf_text(render_invoice(sample_invoice(2, kind=InvoiceKind.AVOIR), seller)))
    assert "AVOIR" in text
    assert "FACTURE" not in text


def test_chorus_references_printed_when_present(seller: Seller) -> None:
    chorus = "\n".join(pdf_text(render_invoice(sample_invoice(4, chorus=True), seller)))
    plain = "\n".join(pdf_text(render_invoice(sample_invoice(4), seller)))
    assert "SERV-ACHATS" in chorus and "EJ00000004" in chorus
    assert "Code service" not in plain and "N° d'engagement" not in plain


def test_long_invoice_flows_over_pages_with_header_repeated(seller: Seller) -> None:
    invoice = sample_invoice(7, lines=80)
    pages = pdf_text(render_invoice(invoice, seller))
    count = len(pages)
    assert count >= 3
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} / {count}" in page
    assert all("Désignation" in page and "Montant HT" in page for page in pages[:-1])
    assert money(invoice.total_gross) in pages[-1]
    assert money(invoice.total_gross) not in pages[0]


def test_every_line_amount_appears_exactly_as_in_the_invoice(seller: Seller) -> None:
    invoice = sample_invoice(11, lines=40)
    text = "\n".join(pdf_text(render_invoice(invoice, seller)))
    for line in invoice.lines:
        assert money(line.net_amount, None) in text
    assert sum((line.net_amount for line in invoice.lines), Decimal(0)) == invoice.total_net


def test_preview_has_watermark_real_print_does_not(seller: Seller) -> None:
    invoice = sample_invoice(7, lines=80)
    preview = pdf_text(render_invoice(invoice, seller, preview=True))
    real = pdf_text(render_invoice(invoice, seller))
    assert len(preview) == len(real) > 1
    assert all("APERÇU" in page for page in preview)
    assert not any("APERÇU" in page for page in real)


def test_fonts_are_embedded_and_no_base14_font_is_used(seller: Seller) -> None:
    pdf = render_invoice(sample_invoice(1), seller)
    assert b"/FontFile2" in pdf
    assert b"Helvetica" not in pdf
