"""Money: `Decimal` only, rounded half-up to the cent, formatted the French way (1 234,56 €)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
#: French typography: narrow no-break space between thousands, no-break space before the symbol.
THOUSANDS_SEP = "\u202f"
NBSP = "\u00a0"


def to_cents(amount: Decimal) -> Decimal:
    """Round to the cent, half-up, as French invoices do."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def format_amount(amount: Decimal, currency: str | None = "EUR") -> str:
    """`Decimal('1234.5')` → `'1 234,50 €'` (narrow no-break spaces)."""
    rounded = to_cents(amount)
    sign = "-" if rounded < 0 else ""
    whole, _, cents = f"{abs(rounded):.2f}".partition(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    text = f"{sign}{THOUSANDS_SEP.join(groups)},{cents}"
    if currency is None:
        return text
    symbol = "€" if currency == "EUR" else currency
    return f"{text}{NBSP}{symbol}"


def format_rate(rate: Decimal) -> str:
    """`Decimal('5.50')` → `'5,5 %'`."""
    text = f"{rate.normalize():f}".replace(".", ",")
    return f"{text}{NBSP}%"
