"""Bills of exchange (traites): LCR and billet à ordre, one bill per due date, three per A4 page.

Zones follow the French bill format (NF K 11-030-1): place and date of issue, due date, amount in
figures, drawee's name, address and bank details (RIB taken from the French IBAN), drawer,
"valeur en", reference; cut marks between the three bills of a page.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from reportlab.pdfgen.canvas import Canvas

from postier.documents.fonts import BOLD, MONO, REGULAR, wrap
from postier.documents.invoice_pdf import format_date
from postier.documents.layout import PAGE_HEIGHT, PAGE_WIDTH, new_canvas
from postier.documents.texts import Texts, load_texts
from postier.domain.models import DueDate, Invoice, Seller
from postier.domain.money import format_amount
from postier.domain.states import BILL_OF_EXCHANGE_MODES, InvoiceKind, PaymentMode
from postier.errors import DocumentError

BILLS_PER_PAGE = 3
BILL_HEIGHT = PAGE_HEIGHT / BILLS_PER_PAGE
SIDE = 22.0


@dataclass(frozen=True)
class Rib:
    """French bank details, as printed on a bill: bank 5, branch 5, account 11, key 2."""

    bank_code: str
    branch_code: str
    account_number: str
    key: str


def iban_is_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if len(compact) < 15 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1


def split_french_iban(iban: str) -> Rib:
    """`FR76 3000 6000 0112 3456 7890 189` → Rib('30006', '00001', '12345678901', '89')."""
    compact = iban.replace(" ", "").upper()
    if not compact.startswith("FR") or len(compact) != 27 or not iban_is_valid(compact):
        raise ValueError(f"not a valid French IBAN: {iban!r}")
    bban = compact[4:]
    return Rib(bban[:5], bban[5:10], bban[10:21], bban[21:23])


@dataclass(frozen=True)
class Bill:
    invoice: Invoice
    due: DueDate
    position: int
    count: int
    rib: Rib


def bills_of(invoice: Invoice) -> list[Bill]:
    """One bill per due date of the invoice; refuses other payment modes and bad bank details."""
    texts = load_texts("bill_of_exchange")
    customer = invoice.customer
    if invoice.payment_mode not in BILL_OF_EXCHANGE_MODES:
        raise DocumentError(
            texts.format(
                "errors", "wrong_mode", number=invoice.number, mode=invoice.payment_mode.label
            )
        )
    # A bill asks the drawee to pay: never for a credit note, a 0 € or a negative amount.
    if invoice.kind is InvoiceKind.AVOIR:
        raise DocumentError(texts.format("errors", "credit_note", number=invoice.number))
    if invoice.total_gross <= 0:
        raise DocumentError(
            texts.format(
                "errors",
                "nothing_to_pay",
                number=invoice.number,
                amount=format_amount(invoice.total_gross),
            )
        )
    if not customer.iban:
        raise DocumentError(
            texts.format("errors", "no_iban", number=invoice.number, customer=customer.code)
        )
    try:
        rib = split_french_iban(customer.iban)
    except ValueError:
        raise DocumentError(
            texts.format("errors", "bad_iban", number=invoice.number, customer=customer.code)
        ) from None
    schedule = invoice.schedule()
    return [
        Bill(invoice, due, position, len(schedule), rib)
        for position, due in enumerate(schedule, start=1)
    ]


def draw_bills(
    canvas: Canvas, bills: Iterable[Bill], seller: Seller, *, issued_on: date | None = None
) -> int:
    """Draw bills three per page (ending each page with showPage); return the page count."""
    texts = load_texts("bill_of_exchange")
    pages = 0
    slot = 0
    for bill in bills:
        if slot == 0:
            _draw_cut_marks(canvas)
        bottom = PAGE_HEIGHT - (slot + 1) * BILL_HEIGHT
        _draw_bill(canvas, bill, seller, bottom, texts, issued_on or bill.invoice.invoice_date)
        slot += 1
        if slot == BILLS_PER_PAGE:
            canvas.showPage()
            pages += 1
            slot = 0
    if slot:
        canvas.showPage()
        pages += 1
    return pages


def iter_bills(invoices: Iterable[Invoice]) -> Iterator[Bill]:
    for invoice in invoices:
        yield from bills_of(invoice)


def render_bills(invoices: Iterable[Invoice], seller: Seller) -> bytes:
    """All the bills of these invoices (LCR / billet à ordre only), as one PDF."""
    invoices = list(invoices)
    bills = [bill for invoice in invoices for bill in bills_of(invoice)]
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer,
        title="Traites " + ", ".join(invoice.number for invoice in invoices[:5]),
        author=seller.name,
        subject="Lettres de change relevé et billets à ordre",
    )
    draw_bills(canvas, bills, seller)
    canvas.save()
    return buffer.getvalue()


def _draw_cut_marks(canvas: Canvas) -> None:
    canvas.saveState()
    canvas.setLineWidth(0.4)
    canvas.setDash(3, 3)
    for index in range(1, BILLS_PER_PAGE):
        y = index * BILL_HEIGHT
        canvas.line(0, y, 14, y)
        canvas.line(PAGE_WIDTH - 14, y, PAGE_WIDTH, y)
        canvas.setFont(REGULAR, 7)
        canvas.drawString(16, y - 2.5, "✂")
    canvas.restoreState()


def _box(canvas: Canvas, x: float, y: float, width: float, height: float, label: str) -> None:
    canvas.setLineWidth(0.6)
    canvas.rect(x, y, width, height, stroke=1, fill=0)
    canvas.setFont(REGULAR, 6)
    canvas.drawString(x + 2, y + height - 7, label)


def _draw_bill(
    canvas: Canvas, bill: Bill, seller: Seller, bottom: float, texts: Texts, issued_on: date
) -> None:
    labels = texts["labels"]
    invoice = bill.invoice
    customer = invoice.customer
    left, right = SIDE, PAGE_WIDTH - SIDE
    top = bottom + BILL_HEIGHT - 14
    is_lcr = invoice.payment_mode is PaymentMode.LCR
    # Title and order text.
    canvas.setFont(BOLD, 11)
    canvas.drawString(left, top - 8, texts["titles"]["lcr" if is_lcr else "billet_ordre"])
    canvas.setFont(REGULAR, 7)
    order = texts.format("labels", "lcr_order" if is_lcr else "bor_order", drawer=seller.name)
    y = top - 20
    for text in wrap(order, REGULAR, 7, 300):
        canvas.drawString(left, y, text)
        y -= 8.5
    # Place and date of issue, due date, amount: the top right zones.
    place = texts.format(
        "labels", "place_date", city=seller.address.city, date=format_date(issued_on)
    )
    _box(canvas, 340, top - 20, 100, 24, labels["issue"])
    canvas.setFont(REGULAR, 7.5)
    canvas.drawString(343, top - 16, place)
    _box(canvas, 445, top - 20, right - 445, 24, labels["due_date"])
    canvas.setFont(BOLD, 10)
    canvas.drawString(449, top - 16, format_date(bill.due.due_date))
    _box(canvas, 445, top - 50, right - 445, 26, labels["amount"])
    canvas.setFont(BOLD, 11)
    canvas.drawRightString(right - 4, top - 45, format_amount(bill.due.amount, invoice.currency))
    # Drawee's bank details (RIB split from the IBAN).
    rib_top = top - 78
    widths = (
        (labels["bank_code"], bill.rib.bank_code, 60.0),
        (labels["branch_code"], bill.rib.branch_code, 60.0),
        (labels["account_number"], bill.rib.account_number, 110.0),
        (labels["rib_key"], bill.rib.key, 34.0),
    )
    x = left
    canvas.setFont(REGULAR, 6)
    canvas.drawString(left, rib_top + 26, labels["rib"])
    for label, value, width in widths:
        _box(canvas, x, rib_top, width, 24, label)
        canvas.setFont(MONO, 10)
        canvas.drawString(x + 4, rib_top + 4, value)
        x += width + 4
    _box(canvas, x + 6, rib_top, right - x - 6, 24, labels["drawee_bank"])
    canvas.setFont(REGULAR, 8)
    canvas.drawString(x + 10, rib_top + 5, f"BIC {customer.bic}" if customer.bic else "")
    # Drawee's name and address.
    drawee_top = rib_top - 8
    _box(canvas, left, drawee_top - 74, 264, 74, labels["drawee"])
    canvas.setFont(BOLD, 9)
    canvas.drawString(left + 6, drawee_top - 18, customer.name)
    canvas.setFont(REGULAR, 8.5)
    y = drawee_top - 30
    for text in customer.address.lines():
        canvas.drawString(left + 6, y, text)
        y -= 10
    if customer.siren:
        canvas.setFont(REGULAR, 7)
        canvas.drawString(left + 6, drawee_top - 70, f"SIREN {customer.siren}")
    # Drawer, value, reference.
    box_left = left + 272
    _box(canvas, box_left, drawee_top - 34, right - box_left, 34, labels["drawer"])
    canvas.setFont(BOLD, 8)
    canvas.drawString(box_left + 4, drawee_top - 18, seller.name)
    canvas.setFont(REGULAR, 7)
    canvas.drawString(box_left + 4, drawee_top - 28, ", ".join(seller.address.lines()))
    _box(canvas, box_left, drawee_top - 74, 120, 36, labels["value"])
    canvas.setFont(REGULAR, 8)
    canvas.drawString(box_left + 4, drawee_top - 62, labels["value_text"])
    _box(canvas, box_left + 124, drawee_top - 74, right - box_left - 124, 36, labels["reference"])
    canvas.setFont(REGULAR, 7.5)
    canvas.drawString(
        box_left + 128,
        drawee_top - 60,
        texts.format(
            "labels", "invoice_ref", number=invoice.number, position=bill.position, count=bill.count
        ),
    )
    canvas.drawString(box_left + 128, drawee_top - 70, f"Client {customer.code}")
    # Acceptance and drawer's signature zones.
    sign_top = drawee_top - 80
    _box(canvas, left, bottom + 14, 264, sign_top - bottom - 14, labels["acceptance"])
    _box(canvas, box_left, bottom + 14, right - box_left, sign_top - bottom - 14, labels["stamp"])
