"""Writing `CPPStatut` return files as Chorus Pro writes them (schema `CPPStatutPivot_V1_19`).

Postier never sends such files: this writer stands for Chorus Pro in the demo (simulated returns
on the local SFTP) and in the tests. Everything it writes is valid against the official XSD
(`postier.domain.chorus_returns.schema_errors` is empty), so the parser is exercised on the
official structure, not on a layout of our own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from postier.domain.chorus_returns import FlowError

#: Our application code and the AIFE's, as they appear in the return envelope's partners.
RECEIVER, SENDER = "POSTIE", "AIFE01"


@dataclass(frozen=True)
class FlowLine:
    """A flow status (90–96) about the deposited flow `flow_name` (`IdFlux`)."""

    flow_name: str
    code: str
    #: A datetime, or the raw `Horodatage` text (to write a hostile date).
    at: datetime | str
    comment: str = ""
    #: Its `Details/LigneErreurDetail`, written as the parser reads them back.
    errors: tuple[FlowError, ...] = ()


@dataclass(frozen=True)
class InvoiceLine:
    """An invoice status (01–12) about our invoice `number` (`IdFacture`)."""

    number: str
    code: str
    at: datetime | str
    debtor_siret: str
    comment: str = ""
    complement: str = ""


def flow_status_file(
    lines: Iterable[FlowLine], *, return_flow: str, produced: datetime, receiver: str = RECEIVER
) -> bytes:
    """A `CPPFluxStatuts` file: statuses of flows we deposited."""
    root = _envelope(return_flow, produced, receiver)
    block = etree.SubElement(root, "CPPFluxStatuts")
    count = 0
    for count, line in enumerate(lines, start=1):
        unit = etree.SubElement(block, "CPPFluxStatutUnitaire", NumOrdre=str(count))
        data = etree.SubElement(unit, "DonneesStatut")
        _sub(data, "IdStatut", line.code)
        if line.comment:
            _sub(data, "Commentaire", line.comment)
        _sub(data, "Horodatage", _datetime(line.at))
        _sub(data, "IdFlux", line.flow_name)
        if line.errors:
            details = etree.SubElement(data, "Details", NbLignesErreur=str(len(line.errors)))
            for error in line.errors:
                detail = etree.SubElement(details, "LigneErreurDetail")
                if error.line_id is not None:
                    detail.set("IdLigne", error.line_id)
                _sub(detail, "NatureErreur", error.nature or "Erreur")
                _sub(detail, "CodeErreur", error.code)
                _sub(detail, "LibelleErreur", error.label)
                if error.description:
                    _sub(detail, "DescriptionErreur", error.description)
    block.set("compteur", str(count))
    return _bytes(root)


def invoice_status_file(
    lines: Iterable[InvoiceLine],
    *,
    supplier_siret: str,
    supplier_name: str = "Fournisseur",
    return_flow: str,
    produced: datetime,
    receiver: str = RECEIVER,
) -> bytes:
    """A `CPPFactureStatuts` file: statuses of invoices we deposited (we are the supplier)."""
    root = _envelope(return_flow, produced, receiver)
    block = etree.SubElement(root, "CPPFactureStatuts")
    count = 0
    for count, line in enumerate(lines, start=1):
        unit = etree.SubElement(block, "CPPFactureStatutUnitaire", NumOrdre=str(count))
        supplier = etree.SubElement(unit, "Fournisseur")
        _sub(supplier, "TypeIdentifiant", "1")  # SIRET
        _sub(supplier, "Identifiant", supplier_siret)
        _sub(supplier, "RaisonSociale", supplier_name)
        debtor = etree.SubElement(unit, "Debiteur")
        _sub(debtor, "TypeIdentifiant", "1")
        _sub(debtor, "Identifiant", line.debtor_siret)
        data = etree.SubElement(unit, "DonneesStatut")
        _sub(data, "IdStatut", line.code)
        if line.complement:
            _sub(data, "ComplementStatut", line.complement)
        if line.comment:
            _sub(data, "Commentaire", line.comment)
        _sub(data, "Horodatage", _datetime(line.at))
        _sub(data, "IdFacture", line.number)
    block.set("compteur", str(count))
    return _bytes(root)


def _envelope(return_flow: str, produced: datetime, receiver: str) -> etree._Element:
    root = etree.Element("CPPStatut", Version="V1_19")
    unit = etree.SubElement(etree.SubElement(root, "Enveloppe"), "EnveloppeUnitaire", NumOrdre="1")
    parameters = etree.SubElement(unit, "Parametres")
    for n, (code, value) in enumerate(
        [("DtPrd", produced.date().isoformat()), ("IdFlx", return_flow)], start=1
    ):
        parameter = etree.SubElement(parameters, "ParametreIndiv", NumOrdre=f"{n:04d}")
        _sub(parameter, "Code", code)
        _sub(parameter, "Valeurparametre", value)
    partners = etree.SubElement(unit, "Partenaires")
    _sub(etree.SubElement(partners, "Recepteur"), "Id", receiver)
    _sub(etree.SubElement(partners, "Emetteur"), "Id", SENDER)
    return root


def _sub(parent: etree._Element, name: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, name)
    element.text = text
    return element


def _datetime(at: datetime | str) -> str:
    return at if isinstance(at, str) else at.isoformat(timespec="seconds")


def _bytes(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
