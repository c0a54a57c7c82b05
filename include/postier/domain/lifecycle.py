"""Invoice lifecycle messages (« cycle de vie ») of the 2026 reform: CDAR D22B, statuses 200–214.

A lifecycle file is one UN/CEFACT CrossDomainAcknowledgementAndResponse (D22B) document, valid
against the official schema (copied unchanged in `schemas/cdar-d22b/` from `spec/afnor/`). Each
`AcknowledgementDocument` carries its date (`IssueDateTime`) and the invoices it is about
(`ReferenceReferencedDocument`): our invoice number in `IssuerAssignedID`, the status in
`ProcessConditionCode`, the reason, when there is one, in `SpecifiedDocumentStatus/Reason` or
`ReasonInformation`.

Hostile input is refused as for the Chorus returns (`chorus_returns`): no DOCTYPE or entity, a
bounded size and depth, the schema before anything is read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lxml import etree

from postier.domain.chorus_returns import PARIS, parse_status_date, safe_xml_root
from postier.domain.limits import MAX_FILE_SIZE
from postier.errors import ReturnFileError

SCHEMA_DIR = Path(__file__).with_name("schemas") / "cdar-d22b"
SCHEMA_NAME = "CrossDomainAcknowledgementAndResponse_100pD22B.xsd"

RSM = "urn:un:unece:uncefact:data:standard:CrossDomainAcknowledgementAndResponse:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
NS = {"rsm": RSM, "ram": RAM, "udt": UDT}

#: The lifecycle statuses of the reform (`spec/afnor/README.md`), with their French labels.
STATUSES: dict[str, str] = {
    "200": "Déposée",
    "201": "Émise par la plateforme",
    "202": "Reçue par la plateforme",
    "203": "Mise à disposition",
    "204": "Prise en charge",
    "205": "Approuvée",
    "206": "Approuvée partiellement",
    "207": "En litige",
    "208": "Suspendue",
    "209": "Complétée",
    "210": "Refusée",
    "211": "Paiement transmis",
    "212": "Encaissée",
    "213": "Rejetée",
    "214": "Visée",
}

#: Statuses the clerk must act on: shown in the report with their reason.
NEEDS_ATTENTION = frozenset({"207", "210", "213"})
#: The buyer's payment was received.
CASHED = "212"


class LifecycleFileError(ReturnFileError):
    """A lifecycle file is malformed, not valid against the CDAR schema, or hostile."""


@dataclass(frozen=True)
class LifecycleStatus:
    invoice_number: str
    code: str
    at: datetime
    reason: str = ""

    @property
    def label(self) -> str:
        return STATUSES[self.code]

    def __str__(self) -> str:
        text = f"{self.code} {self.label}"
        return f"{text} : {self.reason}" if self.reason else text


@functools.cache
def cdar_schema() -> etree.XMLSchema:
    """The official CDAR D22B schema, compiled once per process (imports resolved locally)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / SCHEMA_NAME), parser))


def parse_lifecycle(data: bytes, *, now: datetime | None = None) -> list[LifecycleStatus]:
    """The statuses of one CDAR lifecycle file; `LifecycleFileError` (French) when it is refused."""
    if len(data) > MAX_FILE_SIZE:
        raise LifecycleFileError(f"fichier de cycle de vie de plus de {MAX_FILE_SIZE} octets")
    root = safe_xml_root(data, "", LifecycleFileError)
    if root.tag != f"{{{RSM}}}CrossDomainAcknowledgementAndResponse":
        raise LifecycleFileError(
            f"XML inattendu : élément racine « {etree.QName(root).localname} », "
            "« CrossDomainAcknowledgementAndResponse » (CDAR) attendu"
        )
    schema = cdar_schema()
    if not schema.validate(root):
        errors = [f"ligne {e.line} : {e.message}" for e in schema.error_log]
        raise LifecycleFileError(
            f"fichier non conforme au schéma officiel CDAR D22B : {' ; '.join(errors[:3])}"
        )
    statuses: list[LifecycleStatus] = []
    for ack in root.iterfind("rsm:AcknowledgementDocument", NS):
        at = _date(ack, now)
        for ref in ack.iterfind("ram:ReferenceReferencedDocument", NS):
            number = (ref.findtext("ram:IssuerAssignedID", namespaces=NS) or "").strip()
            code = (ref.findtext("ram:ProcessConditionCode", namespaces=NS) or "").strip()
            if not number:
                raise LifecycleFileError("statut sans numéro de facture (IssuerAssignedID)")
            if code not in STATUSES:
                raise LifecycleFileError(
                    f"facture {number} : statut de cycle de vie « {code[:10]} » inconnu "
                    "(200 à 214 attendus, ProcessConditionCode)"
                )
            statuses.append(LifecycleStatus(number, code, at, _reason(ref)))
    return statuses


def _date(ack: etree._Element, now: datetime | None) -> datetime:
    node = ack.find("ram:IssueDateTime", NS)
    if node is None:
        raise LifecycleFileError("date du statut absente (AcknowledgementDocument/IssueDateTime)")
    value = (node.findtext("udt:DateTime", namespaces=NS) or "").strip()
    if not value:
        # DateTimeString, format 204 (UN/CEFACT 2379: CCYYMMDDHHMMSS), the CII usage.
        text = (node.findtext("udt:DateTimeString", namespaces=NS) or "").strip()
        if len(text) != 14 or not text.isdigit():
            raise LifecycleFileError(f"date du statut « {text[:20]} » illisible (format 204)")
        value = f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:]}"
    try:
        return parse_status_date(value, now=now)
    except ReturnFileError as error:
        raise LifecycleFileError(str(error)) from None


def _reason(ref: etree._Element) -> str:
    parts = [
        (t.text or "").strip() for t in ref.iterfind("ram:SpecifiedDocumentStatus/ram:Reason", NS)
    ] + [
        (t.text or "").strip()
        for t in ref.iterfind("ram:SpecifiedDocumentStatus/ram:ReasonInformation", NS)
    ]
    return " ; ".join(p for p in parts if p)[:500]


def write_lifecycle(
    statuses: list[LifecycleStatus], *, doc_id: str, recipient: str = "Postier SA"
) -> bytes:
    """One CDAR D22B lifecycle message, as a Plateforme Agréée sends it to the seller: one
    `AcknowledgementDocument` per status. Checked against the official schema before it is
    returned (the local PA of the demo and the tests produces nothing else)."""
    root = etree.Element(f"{{{RSM}}}CrossDomainAcknowledgementAndResponse", nsmap=NS)
    exchanged = _el(root, RSM, "ExchangedDocument")
    _el(exchanged, RAM, "ID", doc_id)
    _el(_el(exchanged, RAM, "RecipientTradeParty"), RAM, "Name", recipient)
    for s in statuses:
        ack = _el(root, RSM, "AcknowledgementDocument")
        issued = _el(ack, RAM, "IssueDateTime")
        # Format 204 (CCYYMMDDHHMMSS) carries no zone: Paris time, as the parser reads it.
        stamp = s.at.astimezone(PARIS).strftime("%Y%m%d%H%M%S")
        _el(issued, UDT, "DateTimeString", stamp).set("format", "204")
        ref = _el(ack, RAM, "ReferenceReferencedDocument")
        _el(ref, RAM, "IssuerAssignedID", s.invoice_number)
        _el(ref, RAM, "ProcessConditionCode", s.code)
        if s.reason:
            _el(_el(ref, RAM, "SpecifiedDocumentStatus"), RAM, "Reason", s.reason)
    schema = cdar_schema()
    if not schema.validate(root):
        raise LifecycleFileError(f"message CDAR produit non conforme : {schema.error_log}")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _el(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    node = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        node.text = text
    return node
