"""Send states of an invoice (état d'envoi) and payment modes, with their French labels."""

from __future__ import annotations

from enum import StrEnum


class SendState(StrEnum):
    EN_ATTENTE = "EN_ATTENTE"
    PRET = "PRET"
    ENVOYE = "ENVOYE"
    CONSERVE_INTERNE = "CONSERVE_INTERNE"

    @property
    def label(self) -> str:
        return SEND_STATE_LABELS[self]


SEND_STATE_LABELS: dict[SendState, str] = {
    SendState.EN_ATTENTE: "En attente",
    SendState.PRET: "Prêt",
    SendState.ENVOYE: "Envoyé au destinataire",
    SendState.CONSERVE_INTERNE: "Conservé en interne",
}


class PaymentMode(StrEnum):
    VIREMENT = "virement"
    CHEQUE = "cheque"
    LCR = "lcr"
    BILLET_ORDRE = "billet_ordre"
    PRELEVEMENT = "prelevement"
    CARTE = "carte"

    @property
    def label(self) -> str:
        return PAYMENT_MODE_LABELS[self]


PAYMENT_MODE_LABELS: dict[PaymentMode, str] = {
    PaymentMode.VIREMENT: "Virement",
    PaymentMode.CHEQUE: "Chèque",
    PaymentMode.LCR: "LCR (lettre de change relevé)",
    PaymentMode.BILLET_ORDRE: "Billet à ordre",
    PaymentMode.PRELEVEMENT: "Prélèvement",
    PaymentMode.CARTE: "Carte bancaire",
}

#: Payment modes for which bills of exchange (traites) are printed.
BILL_OF_EXCHANGE_MODES: frozenset[PaymentMode] = frozenset(
    {PaymentMode.LCR, PaymentMode.BILLET_ORDRE}
)


class Channel(StrEnum):
    """How a customer receives its invoices."""

    PORTAIL = "portail"
    CHORUS = "chorus"
    PAPIER = "papier"
    #: B2B e-invoicing (2026 reform): a flow on our Plateforme Agréée.
    PLATEFORME = "plateforme"


class InvoiceKind(StrEnum):
    FACTURE = "facture"
    AVOIR = "avoir"


class LineNature(StrEnum):
    """What an invoice line sells: goods or services (VAT rules and BT-23 differ)."""

    BIEN = "bien"
    SERVICE = "service"
