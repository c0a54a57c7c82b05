"""Reading produced PDFs back, as a user would: text per page, amounts as extracted."""

from __future__ import annotations

import io
from decimal import Decimal

from pypdf import PdfReader

from postier.domain.money import format_amount


def money(amount: Decimal, currency: str | None = "EUR") -> str:
    """`format_amount` as pypdf extracts it: the no-break space before € comes out as a space."""
    return format_amount(amount, currency).replace("\xa0", " ")


def pdf_text(pdf: bytes) -> list[str]:
    """The extracted text of each page."""
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
