"""CDAR D22B lifecycle files (« cycle de vie ») as a Plateforme Agréée sends them, for the tests.

Every file built here is validated, before it is returned, against the official schema
(`spec/afnor/cdar-d22b/`, the copy the parser uses): a fixture that drifts from the schema fails
the test that builds it, whatever the parser under test does."""

from __future__ import annotations

import functools
from datetime import datetime

from lxml import etree

from postier.domain.lifecycle import SCHEMA_DIR, SCHEMA_NAME

RSM = "urn:un:unece:uncefact:data:standard:CrossDomainAcknowledgementAndResponse:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"


@functools.cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / SCHEMA_NAME)))


def _validated(root: etree._Element) -> bytes:
    schema = _schema()
    assert schema.validate(root), f"CDAR fixture not valid: {schema.error_log}"
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _el(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    node = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        node.text = text
    return node


def cdar(number: str, code: str, at: datetime, reason: str = "", *, doc_id: str = "LC-1") -> bytes:
    """One lifecycle message: invoice `number` reached status `code` at `at`."""
    root = etree.Element(
        f"{{{RSM}}}CrossDomainAcknowledgementAndResponse",
        nsmap={"rsm": RSM, "ram": RAM, "udt": UDT},
    )
    exchanged = _el(root, RSM, "ExchangedDocument")
    _el(exchanged, RAM, "ID", doc_id)
    # The seller (us) receives the buyer's lifecycle message.
    recipient = _el(exchanged, RAM, "RecipientTradeParty")
    _el(recipient, RAM, "Name", "Postier SA")
    ack = _el(root, RSM, "AcknowledgementDocument")
    issued = _el(ack, RAM, "IssueDateTime")
    _el(issued, UDT, "DateTimeString", at.strftime("%Y%m%d%H%M%S")).set("format", "204")
    ref = _el(ack, RAM, "ReferenceReferencedDocument")
    _el(ref, RAM, "IssuerAssignedID", number)
    _el(ref, RAM, "ProcessConditionCode", code)
    if reason:
        status = _el(ref, RAM, "SpecifiedDocumentStatus")
        _el(status, RAM, "Reason", reason)
    return _validated(root)
