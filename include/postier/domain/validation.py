"""Checks an invoice must pass before it is prepared for sending on its customer's channel."""

from __future__ import annotations

from decimal import Decimal

from stdnum import iban as iban_number
from stdnum.fr import siren as siren_number
from stdnum.fr import siret as siret_number

from postier.domain.models import EINVOICING_SCHEME, Invoice, Seller
from postier.domain.states import BILL_OF_EXCHANGE_MODES, Channel, PaymentMode

#: Chorus Pro field lengths (EDI specification of the Factur-X flow).
CHORUS_MAX_NUMBER = 20
CHORUS_MAX_ENGAGEMENT = 50
CHORUS_MAX_SERVICE = 100


def sending_problems(invoice: Invoice) -> list[str]:
    """French reasons why the invoice cannot be sent as it is; empty when it can."""
    problems: list[str] = []
    c = invoice.customer
    if not invoice.lines:
        problems.append("la facture n'a aucune ligne")
    if sum((ln.net_amount for ln in invoice.lines), Decimal(0)) != invoice.total_net:
        problems.append("le total HT ne correspond pas à la somme des lignes")
    if sum(v.amount for v in invoice.vat_breakdown()) != invoice.total_vat:
        problems.append("le total de TVA ne correspond pas au détail par taux")
    if invoice.due_dates and sum(d.amount for d in invoice.due_dates) != invoice.total_gross:
        problems.append("la somme des échéances ne correspond pas au total TTC")
    if not (c.address.line1 and c.address.postal_code and c.address.city):
        problems.append(f"adresse du client {c.code} incomplète")
    if invoice.payment_mode in BILL_OF_EXCHANGE_MODES and not (
        c.iban and iban_number.is_valid(c.iban)
    ):
        problems.append(f"IBAN du client {c.code} absent ou invalide (nécessaire pour la traite)")
    if c.channel is Channel.PORTAIL and not c.emails:
        problems.append(f"le client {c.code} n'a pas d'adresse e-mail pour le portail")
    if c.channel is Channel.CHORUS:
        problems.extend(chorus_problems(invoice))
    if c.channel is Channel.PLATEFORME:
        problems.extend(plateforme_problems(invoice))
    return problems


def plateforme_problems(invoice: Invoice) -> list[str]:
    """What the Plateforme Agréée needs to route a B2B invoice: the buyer's SIREN, and an
    electronic address (BT-49) under the directory's SIREN-based scheme 0225 that starts with it
    (typed on the customer's data, or found in the directory by the preparation)."""
    c = invoice.customer
    siren = c.legal_siren
    if not siren or not siren_number.is_valid(siren):
        return [
            f"SIREN du client {c.code} absent ou invalide (obligatoire pour la plateforme agréée)"
        ]
    address = c.einvoicing_address
    if not address:
        return [
            f"adresse de facturation électronique du client {c.code} inconnue (ni sur sa fiche, "
            "ni trouvée dans l'annuaire à la préparation) : préparez la facture de nouveau"
        ]
    if c.einvoicing_scheme == EINVOICING_SCHEME and not address.startswith(siren):
        return [
            f"adresse électronique de facturation du client {c.code} ({address}) : elle doit "
            f"commencer par son SIREN {siren} (schéma 0225 de l'annuaire)"
        ]
    return []


def zero_amount_note(invoice: Invoice, verb: str) -> str | None:
    """The report's note on a 0 € invoice: sending it or keeping it internal is the clerk's
    choice (the spec gives keeping it as an example, not a rule)."""
    if invoice.total_gross != 0:
        return None
    return f"facture à 0 € {verb} (elle peut aussi être conservée en interne, au choix)"


def chorus_problems(invoice: Invoice) -> list[str]:
    """What Chorus Pro would reject: buyer SIRET, service code, engagement number, lengths."""
    c = invoice.customer
    problems: list[str] = []
    if not c.siret or not siret_number.is_valid(c.siret):
        problems.append(
            f"SIRET du client {c.code} absent ou invalide (obligatoire pour Chorus Pro)"
        )
    service = invoice.chorus_service_code or c.chorus_service_code
    if c.chorus_service_required and not service:
        problems.append(f"code service exigé par {c.name} pour Chorus Pro")
    if c.chorus_engagement_required and not invoice.chorus_engagement_number:
        problems.append(f"numéro d'engagement exigé par {c.name} pour Chorus Pro")
    if len(invoice.number) > CHORUS_MAX_NUMBER:
        problems.append(f"numéro de facture de plus de {CHORUS_MAX_NUMBER} caractères")
    engagement = invoice.chorus_engagement_number or ""
    if len(engagement) > CHORUS_MAX_ENGAGEMENT:
        problems.append(f"numéro d'engagement de plus de {CHORUS_MAX_ENGAGEMENT} caractères")
    if len(service or "") > CHORUS_MAX_SERVICE:
        problems.append(f"code service de plus de {CHORUS_MAX_SERVICE} caractères")
    return problems


def chorus_deposit_problems(invoice: Invoice, seller: Seller) -> list[str]:
    """What must hold before an invoice leaves for Chorus Pro: the Chorus rules, and for a
    payment by transfer the seller's IBAN (Chorus asks for the payee's account)."""
    problems = chorus_problems(invoice)
    if invoice.payment_mode is PaymentMode.VIREMENT and not (
        seller.iban and iban_number.is_valid(seller.iban)
    ):
        problems.append(
            "IBAN de l'émetteur (paramètre EMETTEUR_IBAN) absent ou invalide : obligatoire pour "
            "un règlement par virement sur Chorus Pro"
        )
    return problems
