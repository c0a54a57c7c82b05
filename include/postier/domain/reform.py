"""French e-invoicing reform (2026): what an invoice's lines say about the operation.

The billing framework (« cadre de facturation », BT-23, rule BR-FR-08) and the category of the
operation printed on the invoice both follow from the nature of the lines: goods only, services
only, or both. Postier issues ordinary invoices and credit notes (not down-payment, already-paid
or self-billed ones), hence the first framework of each family: B1, S1, M1.
"""

from __future__ import annotations

from enum import StrEnum

from postier.domain.models import Invoice
from postier.domain.states import LineNature


class Operation(StrEnum):
    """Category of the operation (« catégorie de l'opération »), by the nature of the lines."""

    GOODS = "biens"
    SERVICES = "services"
    MIXED = "mixte"


#: BT-23 for an ordinary invoice or credit note (BR-FR-08 list).
BILLING_FRAMEWORK: dict[Operation, str] = {
    Operation.GOODS: "B1",
    Operation.SERVICES: "S1",
    Operation.MIXED: "M1",
}


def operation(invoice: Invoice) -> Operation:
    natures = {line.nature for line in invoice.lines}
    if natures == {LineNature.BIEN}:
        return Operation.GOODS
    if LineNature.BIEN in natures:
        return Operation.MIXED
    return Operation.SERVICES


def billing_framework(invoice: Invoice) -> str:
    """BT-23: B1 goods, S1 services, M1 both."""
    return BILLING_FRAMEWORK[operation(invoice)]


def has_services(invoice: Invoice) -> bool:
    return any(line.nature is LineNature.SERVICE for line in invoice.lines)
