from __future__ import annotations

from pathlib import Path

import pytest
from pdf_reading import pdf_text
from pypdf import PdfReader

from postier.documents import write_bills_print_file, write_print_file
from postier.documents.samples import sample_invoice, sample_invoices
from postier.domain.models import Seller
from postier.domain.states import PaymentMode
from postier.errors import DocumentError


def test_merged_print_file_page_count_is_sum_of_parts(tmp_path: Path, seller: Seller) -> None:
    invoices = [sample_invoice(i, lines=60 if i % 4 == 0 else None) for i in range(9)]
    summary = write_print_file(
        iter(invoices),
        seller,
        tmp_path / "impression.pdf",
        parts_dir=tmp_path / "parts",
        chunk_size=4,
    )
    parts = sorted((tmp_path / "parts").glob("*.pdf"))
    assert len(parts) == summary.invoices == 9
    part_pages = sum(len(PdfReader(part).pages) for part in parts)
    merged = PdfReader(summary.path)
    assert len(merged.pages) == summary.pages == part_pages > 9


def test_merged_print_file_keeps_selection_order(tmp_path: Path, seller: Seller) -> None:
    invoices = [sample_invoice(i) for i in (5, 2, 8)]
    summary = write_print_file(invoices, seller, tmp_path / "p.pdf", chunk_size=2)
    pages = pdf_text(Path(summary.path).read_bytes())
    numbers = [next(inv.number for inv in invoices if inv.number in page) for page in pages]
    assert numbers == [inv.number for inv in invoices]


def test_preview_print_file_is_watermarked(tmp_path: Path, seller: Seller) -> None:
    preview = write_print_file(sample_invoices(3), seller, tmp_path / "a.pdf", preview=True)
    real = write_print_file(sample_invoices(3), seller, tmp_path / "b.pdf")
    assert all("APERÇU" in page for page in pdf_text(Path(preview.path).read_bytes()))
    assert not any("APERÇU" in page for page in pdf_text(Path(real.path).read_bytes()))


def test_bills_print_file_has_every_bill(tmp_path: Path, seller: Seller) -> None:
    invoices = [sample_invoice(i, payment_mode=PaymentMode.LCR, due_dates=3) for i in range(5)]
    summary = write_bills_print_file(
        invoices, seller, tmp_path / "traites.pdf", parts_dir=tmp_path / "parts", chunk_size=2
    )
    text = "\n".join(pdf_text(Path(summary.path).read_bytes()))
    assert text.count("LETTRE DE CHANGE RELEVÉ") == 15
    assert len(list((tmp_path / "parts").glob("*.pdf"))) == 5


def test_bills_print_file_refuses_transfer_invoice_and_leaves_no_file(
    tmp_path: Path, seller: Seller
) -> None:
    invoices = [sample_invoice(1, payment_mode=PaymentMode.LCR), sample_invoice(2)]
    with pytest.raises(DocumentError, match=invoices[1].number):
        write_bills_print_file(invoices, seller, tmp_path / "traites.pdf")
    assert list(tmp_path.iterdir()) == []
