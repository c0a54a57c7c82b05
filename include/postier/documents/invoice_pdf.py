"""The invoice PDF: A4, French, one or several pages (table header repeated, "Page n / N").

Drawn directly on a reportlab canvas (no flowables): pagination is computed before drawing, so
the page count is known for "Page n / N" and several invoices can share one canvas (print files).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from reportlab.pdfgen.canvas import Canvas

from postier.documents.fonts import BOLD, REGULAR, wrap
from postier.documents.layout import (
    CONTENT_WIDTH,
    LEFT,
    PAGE_HEIGHT,
    RIGHT,
    draw_watermark,
    new_canvas,
)
from postier.documents.texts import Texts, load_texts
from postier.documents.units import unit_label
from postier.domain import reform
from postier.domain.models import Invoice, Seller
from postier.domain.money import format_amount, format_rate
from postier.domain.states import PaymentMode

# Vertical geometry (points from the bottom of the page).
FIRST_TABLE_TOP = 560.0
NEXT_TABLE_TOP = 760.0
TABLE_BOTTOM = 78.0
ROW_FONT_SIZE = 8.5
ROW_LEADING = 10.5
ROW_PADDING = 4.0
HEADER_HEIGHT = 16.0
SMALL = 7.5
SMALL_LEADING = 9.5

# Table columns: (x, alignment); amounts are right-aligned on their x.
COL_DESCRIPTION = LEFT + 2
DESCRIPTION_WIDTH = 232.0
COL_QUANTITY = 318.0
COL_UNIT = 324.0
COL_UNIT_PRICE = 436.0
COL_VAT = 478.0
COL_NET = RIGHT - 2


def format_quantity(quantity: Decimal) -> str:
    text = f"{quantity.normalize():f}"
    whole, _, decimals = text.partition(".")
    return whole + ("," + decimals if decimals else "")


def format_date(value: date) -> str:
    return value.strftime("%d/%m/%Y")


@dataclass(frozen=True)
class Row:
    description: list[str]
    quantity: str
    unit: str
    unit_price: str
    vat_rate: str
    net: str

    @property
    def height(self) -> float:
        return len(self.description) * ROW_LEADING + ROW_PADDING


@dataclass(frozen=True)
class Closing:
    """What follows the lines table on the last page: VAT, totals, payment, legal mentions."""

    vat_rows: list[tuple[str, str, str]]
    totals: list[tuple[str, str, bool]]
    payment: list[str]
    mentions: list[str]

    @property
    def height(self) -> float:
        vat = HEADER_HEIGHT + 12.0 * len(self.vat_rows)
        totals = 14.0 * len(self.totals)
        return (
            16.0
            + max(vat, totals)
            + 14.0
            + 11.0 * len(self.payment)
            + 8.0
            + SMALL_LEADING * len(self.mentions)
        )


@dataclass(frozen=True)
class InvoiceLayout:
    pages: list[list[Row]]
    closing: Closing

    @property
    def page_count(self) -> int:
        return len(self.pages)


def _rows(invoice: Invoice) -> list[Row]:
    return [
        Row(
            description=wrap(line.description, REGULAR, ROW_FONT_SIZE, DESCRIPTION_WIDTH),
            quantity=format_quantity(line.quantity),
            unit=unit_label(line.unit),
            unit_price=format_amount(line.unit_price, None),
            vat_rate=format_rate(line.vat_rate),
            net=format_amount(line.net_amount, None),
        )
        for line in invoice.lines
    ]


def _closing(invoice: Invoice, seller: Seller, texts: Texts) -> Closing:
    labels = texts["labels"]
    currency = invoice.currency
    vat_rows = [
        (
            format_rate(vat.rate),
            format_amount(vat.base, currency),
            format_amount(vat.amount, currency),
        )
        for vat in invoice.vat_breakdown()
    ]
    gross_label = labels["credit_total"] if invoice.is_credit_note else labels["net_to_pay"]
    totals = [
        (labels["total_net"], format_amount(invoice.total_net, currency), False),
        (labels["total_vat"], format_amount(invoice.total_vat, currency), False),
        (gross_label, format_amount(invoice.total_gross, currency), True),
    ]
    payment = [f"{labels['payment_mode']} : {invoice.payment_mode.label}"]
    schedule = invoice.schedule()
    if not invoice.is_credit_note:
        label = labels["due_dates"] if len(schedule) > 1 else labels["due_date"]
        payment.append(
            f"{label} : "
            + " ; ".join(
                f"{format_date(due.due_date)} — {format_amount(due.amount, currency)}"
                for due in schedule
            )
        )
    if invoice.payment_mode is PaymentMode.VIREMENT:
        payment.append(
            texts.format("labels", "bank_details", iban=_group(seller.iban), bic=seller.bic)
        )
    legal = _reform_mentions(invoice, seller, texts) + [
        texts.format("legal", "penalties", late_penalty_rate=seller.late_penalty_rate),
        texts.format("legal", "discount", discount_terms=seller.discount_terms),
    ]
    if invoice.is_credit_note:
        legal.append(texts["legal"]["credit_note"])
    mentions: list[str] = []
    for paragraph in legal:
        mentions.extend(wrap(paragraph, REGULAR, SMALL, CONTENT_WIDTH))
    return Closing(vat_rows, totals, payment, mentions)


def _reform_mentions(invoice: Invoice, seller: Seller, texts: Texts) -> list[str]:
    """Mentions required since the reform: the corrected invoice of a credit note, the category
    of the operation, the delivery address when it is not the billing one, the option for VAT
    on debits (it concerns services only)."""
    legal = texts["legal"]
    mentions: list[str] = []
    credited = invoice.credited_invoice
    if credited is not None:
        mentions.append(
            texts.format(
                "legal",
                "credited_invoice",
                number=credited.number,
                date=format_date(credited.invoice_date),
            )
        )
    category = legal[f"operation_{reform.operation(invoice).value}"]
    mentions.append(texts.format("legal", "operation", category=category))
    delivery = invoice.delivery
    if delivery is not None and delivery.address is not None:
        if delivery.address != invoice.customer.address:
            place = [delivery.name] if delivery.name else []
            address = ", ".join(place + delivery.address.lines())
            mentions.append(texts.format("legal", "delivery_address", address=address))
    if seller.option_debits and reform.has_services(invoice):
        mentions.append(legal["option_debits"])
    return mentions


def _group(iban: str) -> str:
    compact = iban.replace(" ", "")
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def layout_invoice(invoice: Invoice, seller: Seller) -> InvoiceLayout:
    """Split the lines into pages; the closing block goes on the last page, or a page of its own."""
    texts = load_texts("invoice")
    closing = _closing(invoice, seller, texts)
    pages: list[list[Row]] = [[]]
    top = FIRST_TABLE_TOP - HEADER_HEIGHT
    y = top
    for row in _rows(invoice):
        if y - row.height < TABLE_BOTTOM and pages[-1]:
            pages.append([])
            y = NEXT_TABLE_TOP - HEADER_HEIGHT
        pages[-1].append(row)
        y -= row.height
    if y - closing.height < TABLE_BOTTOM:
        pages.append([])
    return InvoiceLayout(pages, closing)


def draw_invoice(canvas: Canvas, invoice: Invoice, seller: Seller, *, preview: bool = False) -> int:
    """Draw every page of the invoice on `canvas` (ending each with showPage); return the count."""
    texts = load_texts("invoice")
    layout = layout_invoice(invoice, seller)
    count = layout.page_count
    for number, rows in enumerate(layout.pages, start=1):
        if preview:
            draw_watermark(canvas, texts["titles"]["preview_watermark"], BOLD)
        if number == 1:
            _draw_first_header(canvas, invoice, seller, texts)
            y = FIRST_TABLE_TOP
        else:
            _draw_next_header(canvas, invoice, seller, texts)
            y = NEXT_TABLE_TOP
        if rows or number == 1:
            y = _draw_table(canvas, rows, y, texts)
        if number == count:
            _draw_closing(canvas, layout.closing, y - 16.0, texts)
        _draw_footer(canvas, seller, texts, number, count)
        canvas.showPage()
    return count


def render_invoice(invoice: Invoice, seller: Seller, *, preview: bool = False) -> bytes:
    """The invoice as a plain PDF (a print or a preview; the final document is Factur-X)."""
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer,
        title=document_title(invoice),
        author=seller.name,
        subject=document_subject(invoice, seller),
    )
    draw_invoice(canvas, invoice, seller, preview=preview)
    canvas.save()
    return buffer.getvalue()


def document_title(invoice: Invoice) -> str:
    kind = load_texts("invoice")["titles"][invoice.kind.value].capitalize()
    return f"{kind} {invoice.number}"


def document_subject(invoice: Invoice, seller: Seller) -> str:
    return (
        f"{document_title(invoice)} du {format_date(invoice.invoice_date)} "
        f"émise par {seller.name} pour {invoice.customer.name}"
    )


def _draw_first_header(canvas: Canvas, invoice: Invoice, seller: Seller, texts: Texts) -> None:
    labels = texts["labels"]
    top = PAGE_HEIGHT - 48
    # Seller block, top left.
    canvas.setFont(BOLD, 13)
    canvas.drawString(LEFT, top, seller.name)
    canvas.setFont(REGULAR, 8)
    y = top - 13
    seller_lines = [
        texts.format("seller", "identity", legal_form=seller.legal_form, capital=seller.capital),
        *seller.address.lines(),
        f"SIRET {seller.siret} — {seller.rcs}",
        f"TVA intracommunautaire {seller.vat_number}",
        seller.email,
    ]
    for text in seller_lines:
        canvas.drawString(LEFT, y, text)
        y -= 10
    # Title and references, top right.
    canvas.setFont(BOLD, 20)
    canvas.drawRightString(RIGHT, top - 4, texts["titles"][invoice.kind.value])
    schedule = invoice.schedule()
    refs = [
        (labels["number"], invoice.number),
        (labels["date"], format_date(invoice.invoice_date)),
    ]
    if not invoice.is_credit_note:
        refs.append(
            (
                labels["due_dates"] if len(schedule) > 1 else labels["due_date"],
                ", ".join(format_date(due.due_date) for due in schedule),
            )
        )
    delivery = invoice.delivery
    if delivery is not None and delivery.delivery_date is not None:
        refs.append((labels["delivery_date"], format_date(delivery.delivery_date)))
    refs.append((labels["customer_code"], invoice.customer.code))
    refs.append((labels["batch"], str(invoice.batch_number)))
    if invoice.chorus_service_code:
        refs.append((labels["service_code"], invoice.chorus_service_code))
    if invoice.chorus_engagement_number:
        refs.append((labels["engagement_number"], invoice.chorus_engagement_number))
    y = top - 24
    for label, value in refs:
        canvas.setFont(REGULAR, 8.5)
        canvas.drawRightString(RIGHT - 120, y, f"{label} :")
        canvas.setFont(BOLD, 8.5)
        canvas.drawString(RIGHT - 115, y, value)
        y -= 11
    # Buyer block, where a window envelope shows it.
    customer = invoice.customer
    box_left, box_top = 310.0, 680.0
    canvas.setLineWidth(0.5)
    canvas.roundRect(box_left - 8, box_top - 92, RIGHT - box_left + 8, 104, 4, stroke=1, fill=0)
    canvas.setFont(BOLD, 10)
    canvas.drawString(box_left, box_top, customer.name)
    canvas.setFont(REGULAR, 9)
    y = box_top - 12
    buyer_lines = ([customer.contact_name] if customer.contact_name else []) + list(
        customer.address.lines()
    )
    for text in buyer_lines:
        canvas.drawString(box_left, y, text)
        y -= 11
    canvas.setFont(REGULAR, 7.5)
    ids = []
    if customer.legal_siren:
        ids.append(f"{labels['buyer_siren']} {customer.legal_siren}")
    if customer.siret:
        ids.append(f"{labels['buyer_siret']} {customer.siret}")
    if ids:
        canvas.drawString(box_left, box_top - 77, " — ".join(ids))
    if customer.vat_number:
        canvas.drawString(box_left, box_top - 86, f"{labels['buyer_vat']} {customer.vat_number}")


def _draw_next_header(canvas: Canvas, invoice: Invoice, seller: Seller, texts: Texts) -> None:
    top = PAGE_HEIGHT - 48
    canvas.setFont(BOLD, 11)
    canvas.drawString(LEFT, top, seller.name)
    title = texts["titles"][invoice.kind.value]
    canvas.drawRightString(
        RIGHT,
        top,
        f"{title} {texts['labels']['number']} {invoice.number} ({texts['labels']['continued']})",
    )
    canvas.setFont(REGULAR, 8.5)
    canvas.drawRightString(
        RIGHT,
        top - 13,
        f"{invoice.customer.name} — {texts['labels']['customer_code']} {invoice.customer.code}",
    )


def _draw_table(canvas: Canvas, rows: list[Row], top: float, texts: Texts) -> float:
    heads = texts["table"]
    canvas.setFillGray(0.9)
    canvas.rect(LEFT, top - HEADER_HEIGHT, RIGHT - LEFT, HEADER_HEIGHT, stroke=0, fill=1)
    canvas.setFillGray(0)
    baseline = top - 11
    canvas.setFont(BOLD, 8.5)
    canvas.drawString(COL_DESCRIPTION, baseline, heads["description"])
    canvas.drawRightString(COL_QUANTITY, baseline, heads["quantity"])
    canvas.drawString(COL_UNIT, baseline, heads["unit"])
    canvas.drawRightString(COL_UNIT_PRICE, baseline, heads["unit_price"])
    canvas.drawRightString(COL_VAT, baseline, heads["vat_rate"])
    canvas.drawRightString(COL_NET, baseline, heads["net"])
    y = top - HEADER_HEIGHT
    canvas.setFont(REGULAR, ROW_FONT_SIZE)
    canvas.setLineWidth(0.25)
    canvas.setStrokeGray(0.75)
    for row in rows:
        baseline = y - ROW_LEADING + 1
        for index, text in enumerate(row.description):
            canvas.drawString(COL_DESCRIPTION, baseline - index * ROW_LEADING, text)
        canvas.drawRightString(COL_QUANTITY, baseline, row.quantity)
        canvas.drawString(COL_UNIT, baseline, row.unit)
        canvas.drawRightString(COL_UNIT_PRICE, baseline, row.unit_price)
        canvas.drawRightString(COL_VAT, baseline, row.vat_rate)
        canvas.drawRightString(COL_NET, baseline, row.net)
        y -= row.height
        canvas.line(LEFT, y, RIGHT, y)
    canvas.setStrokeGray(0)
    return y


def _draw_closing(canvas: Canvas, closing: Closing, top: float, texts: Texts) -> None:
    labels = texts["labels"]
    # VAT breakdown, left.
    canvas.setFillGray(0.9)
    canvas.rect(LEFT, top - HEADER_HEIGHT, 260, HEADER_HEIGHT, stroke=0, fill=1)
    canvas.setFillGray(0)
    canvas.setFont(BOLD, 8.5)
    baseline = top - 11
    canvas.drawString(LEFT + 4, baseline, labels["vat_rate"])
    canvas.drawRightString(LEFT + 170, baseline, labels["vat_base"])
    canvas.drawRightString(LEFT + 256, baseline, labels["vat_amount"])
    canvas.setFont(REGULAR, 8.5)
    y = top - HEADER_HEIGHT
    for rate, base, amount in closing.vat_rows:
        y -= 12
        canvas.drawString(LEFT + 4, y + 3, rate)
        canvas.drawRightString(LEFT + 170, y + 3, base)
        canvas.drawRightString(LEFT + 256, y + 3, amount)
    vat_bottom = y
    # Totals, right.
    y = top
    for label, value, strong in closing.totals:
        y -= 14
        if strong:
            canvas.setFillGray(0.9)
            canvas.rect(RIGHT - 210, y - 4, 210, 15, stroke=0, fill=1)
            canvas.setFillGray(0)
        canvas.setFont(BOLD if strong else REGULAR, 9.5 if strong else 9)
        canvas.drawString(RIGHT - 205, y, label)
        canvas.drawRightString(RIGHT - 4, y, value)
    y = min(vat_bottom, y) - 20
    canvas.setFont(REGULAR, 8.5)
    for text in closing.payment:
        canvas.drawString(LEFT, y, text)
        y -= 11
    y -= 6
    canvas.setFont(REGULAR, SMALL)
    for text in closing.mentions:
        canvas.drawString(LEFT, y, text)
        y -= SMALL_LEADING


def _draw_footer(canvas: Canvas, seller: Seller, texts: Texts, page: int, pages: int) -> None:
    canvas.setFont(REGULAR, 8)
    canvas.drawRightString(RIGHT, 58, texts.format("labels", "page", page=page, pages=pages))
    line = texts.format(
        "footer",
        "line",
        name=seller.name,
        legal_form=seller.legal_form,
        capital=seller.capital,
        address=", ".join(seller.address.lines()),
        siret=seller.siret,
        rcs=seller.rcs,
        vat_number=seller.vat_number,
    )
    canvas.setFont(REGULAR, 6.5)
    canvas.setLineWidth(0.5)
    canvas.line(LEFT, 50, RIGHT, 50)
    y = 40.0
    for text in wrap(line, REGULAR, 6.5, CONTENT_WIDTH):
        canvas.drawCentredString((LEFT + RIGHT) / 2, y, text)
        y -= 8
