from __future__ import annotations

import pytest
from pdf_reading import money, pdf_text

from postier.documents import render_bills, split_french_iban
from postier.documents.bills_of_exchange import bills_of
from postier.documents.samples import sample_invoice
from postier.domain.models import Seller
from postier.domain.states import PaymentMode
from postier.errors import DocumentError


def test_french_iban_splits_into_rib_zones() -> None:
    rib = split_french_iban("FR76 3000 6000 0112 3456 7890 189")
    assert (rib.bank_code, rib.branch_code, rib.account_number, rib.key) == (
        "30006",
        "00001",
        "12345678901",
        "89",
    )


def test_iban_with_bad_checksum_is_refused() -> None:
    with pytest.raises(ValueError):
        split_french_iban("FR7630006000011234567890188")


def test_one_bill_per_due_date(seller: Seller) -> None:
    invoice = sample_invoice(5, payment_mode=PaymentMode.LCR, due_dates=3)
    assert len(bills_of(invoice)) == 3
    text = "\n".join(pdf_text(render_bills([invoice], seller)))
    assert text.count("LETTRE DE CHANGE RELEVÉ") == 3
    for position, due in enumerate(invoice.due_dates, start=1):
        assert money(due.amount) in text
        assert due.due_date.strftime("%d/%m/%Y") in text
        assert f"échéance {position}/3" in text


def test_three_bills_per_page(seller: Seller) -> None:
    invoices = [sample_invoice(i, payment_mode=PaymentMode.LCR, due_dates=2) for i in range(4)]
    pages = pdf_text(render_bills(invoices, seller))
    assert len(pages) == 3  # 8 bills → 3 + 3 + 2
    assert pages[0].count("LETTRE DE CHANGE RELEVÉ") == 3


def test_bill_shows_drawee_rib_and_drawer(seller: Seller) -> None:
    invoice = sample_invoice(5, payment_mode=PaymentMode.BILLET_ORDRE)
    text = "\n".join(pdf_text(render_bills([invoice], seller)))
    rib = split_french_iban(invoice.customer.iban or "")
    assert "BILLET À ORDRE" in text
    for zone in (rib.bank_code, rib.branch_code, rib.account_number, rib.key):
        assert zone in text
    assert invoice.customer.name in text
    assert seller.name in text
    assert f"À {seller.address.city}, le" in text
    assert money(invoice.total_gross) in text


@pytest.mark.parametrize("mode", [PaymentMode.VIREMENT, PaymentMode.CHEQUE, PaymentMode.CARTE])
def test_other_payment_modes_are_refused_naming_the_invoice(
    seller: Seller, mode: PaymentMode
) -> None:
    invoice = sample_invoice(8, payment_mode=mode)
    with pytest.raises(DocumentError, match=invoice.number) as error:
        render_bills([invoice], seller)
    assert mode.label in str(error.value)
