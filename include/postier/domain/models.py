"""Invoices as the documents and delivery layers see them: immutable values loaded by the store."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from postier.domain.money import to_cents
from postier.domain.states import Channel, InvoiceKind, LineNature, PaymentMode, SendState

#: ISO 6523 scheme of the SIREN-based e-invoicing addresses of the French directory.
EINVOICING_SCHEME = "0225"


@dataclass(frozen=True)
class Address:
    line1: str
    line2: str | None
    postal_code: str
    city: str
    country: str = "FR"

    def lines(self) -> list[str]:
        out = [self.line1]
        if self.line2:
            out.append(self.line2)
        out.append(f"{self.postal_code} {self.city}")
        if self.country != "FR":
            out.append(self.country)
        return out


@dataclass(frozen=True)
class Customer:
    code: str
    name: str
    address: Address
    emails: tuple[str, ...]
    channel: Channel
    contact_name: str | None = None
    siren: str | None = None
    siret: str | None = None
    vat_number: str | None = None
    chorus_service_code: str | None = None
    chorus_service_required: bool = False
    chorus_engagement_required: bool = False
    iban: str | None = None
    bic: str | None = None
    #: Where the buyer receives e-invoices (BT-49) and its scheme; None: the SIREN under 0225.
    einvoicing_address: str | None = None
    einvoicing_scheme: str = EINVOICING_SCHEME

    @property
    def legal_siren(self) -> str | None:
        """The buyer's SIREN: its own, else the first nine digits of its SIRET."""
        return self.siren or (self.siret[:9] if self.siret else None)

    @property
    def electronic_address(self) -> str | None:
        return self.einvoicing_address or self.legal_siren


@dataclass(frozen=True)
class Seller:
    """The issuer's identity and legal mentions, from the settings table."""

    name: str
    legal_form: str
    capital: str
    address: Address
    siren: str
    siret: str
    vat_number: str
    rcs: str
    iban: str
    bic: str
    email: str
    late_penalty_rate: str
    discount_terms: str
    #: Where the seller receives e-invoices (BT-34, scheme 0225); None: its SIREN.
    einvoicing_address: str | None = None
    #: Opted for paying VAT on services when invoiced (« d'après les débits »), not when paid.
    option_debits: bool = False

    @property
    def electronic_address(self) -> str:
        return self.einvoicing_address or self.siren


@dataclass(frozen=True)
class InvoiceLine:
    position: int
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    vat_rate: Decimal
    net_amount: Decimal
    nature: LineNature = LineNature.SERVICE


@dataclass(frozen=True)
class DueDate:
    due_date: date
    amount: Decimal


@dataclass(frozen=True)
class CreditedInvoice:
    """The invoice a credit note corrects (BT-25, BT-26)."""

    number: str
    invoice_date: date


@dataclass(frozen=True)
class Delivery:
    """Delivery information (BG-13) as the ERP has it; the place only when it has one."""

    delivery_date: date | None = None
    name: str | None = None
    address: Address | None = None


@dataclass(frozen=True)
class VatLine:
    rate: Decimal
    base: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Invoice:
    id: int
    number: str
    kind: InvoiceKind
    customer: Customer
    invoice_date: date
    due_date: date
    batch_number: int
    created_by: str
    created_at: datetime
    payment_mode: PaymentMode
    total_net: Decimal
    total_vat: Decimal
    total_gross: Decimal
    currency: str
    send_state: SendState
    lines: tuple[InvoiceLine, ...]
    due_dates: tuple[DueDate, ...]
    edited_at: datetime | None = None
    edited_by: str | None = None
    sent_at: datetime | None = None
    sent_by: str | None = None
    dematerialized: bool = False
    chorus_service_code: str | None = None
    chorus_engagement_number: str | None = None
    credited_invoice: CreditedInvoice | None = None
    delivery: Delivery | None = None

    @property
    def is_credit_note(self) -> bool:
        return self.kind is InvoiceKind.AVOIR

    def vat_breakdown(self) -> list[VatLine]:
        """VAT per rate, computed on the sum of the line nets of that rate (rounded per rate)."""
        return list(self._vat_lines)  # a copy of the list to each caller

    @functools.cached_property
    def _vat_lines(self) -> tuple[VatLine, ...]:
        # Computed once per invoice (the checks, the PDF and the Factur-X data each ask): the
        # lines of a frozen invoice never change.
        bases: dict[Decimal, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            bases[line.vat_rate] += line.net_amount
        return tuple(
            VatLine(rate, base, to_cents(base * rate / 100))
            for rate, base in sorted(bases.items(), reverse=True)
        )

    def schedule(self) -> tuple[DueDate, ...]:
        """Due dates to print: the split schedule when there is one, else the single due date."""
        return self.due_dates or (DueDate(self.due_date, self.total_gross),)
