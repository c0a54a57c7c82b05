from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import facturx
import pytest
from lxml import etree
from lxml.builder import ElementMaker
from reportlab import rl_config

from postier.documents import (
    build_facturx_xml,
    check_facturx_xml,
    checked_facturx_xml,
    render_final_invoice,
)
from postier.documents import facturx as postier_facturx
from postier.documents.samples import sample_invoice
from postier.documents.signing import Signer
from postier.documents.xml_nodes import Maker, serialise, to_lxml
from postier.domain.models import Invoice, Seller
from postier.domain.states import InvoiceKind, PaymentMode
from postier.errors import DocumentError

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}


def _xpath(xml: bytes, path: str) -> list[str]:
    return [str(v) for v in etree.fromstring(xml).xpath(path, namespaces=NS)]


def test_embedded_xml_is_the_generated_one_and_passes_xsd(seller: Seller) -> None:
    invoice = sample_invoice(3, due_dates=2)
    pdf = render_final_invoice(invoice, seller)
    filename, embedded = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    assert filename == "factur-x.xml"
    assert embedded == build_facturx_xml(invoice, seller)
    assert facturx.xml_check_xsd(embedded, flavor="factur-x", level="en16931")
    assert facturx.get_level(etree.fromstring(embedded)) == "en16931"


def test_type_code_380_for_invoices_381_for_credit_notes(seller: Seller) -> None:
    invoice_xml = build_facturx_xml(sample_invoice(1), seller)
    credit_xml = build_facturx_xml(sample_invoice(1, kind=InvoiceKind.AVOIR), seller)
    assert _xpath(invoice_xml, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["380"]
    assert _xpath(credit_xml, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["381"]


def test_chorus_references_sirens_and_sirets_in_xml(seller: Seller) -> None:
    invoice = sample_invoice(4, chorus=True)
    xml = build_facturx_xml(invoice, seller)
    assert _xpath(xml, "//ram:BuyerReference/text()") == ["SERV-ACHATS"]
    assert _xpath(xml, "//ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID/text()") == [
        "EJ00000004"
    ]
    # BR-FR-10/32: scheme 0002 is a SIREN (9 digits); a SIRET goes under 0009 (BR-FR-09).
    for party, siren, siret in (
        ("Seller", seller.siren, seller.siret),
        ("Buyer", invoice.customer.siren, invoice.customer.siret),
    ):
        legal = f"//ram:{party}TradeParty/ram:SpecifiedLegalOrganization/ram:ID"
        assert _xpath(xml, legal + "/text()") == [siren]
        assert _xpath(xml, legal + "/@schemeID") == ["0002"]
        global_id = f"//ram:{party}TradeParty/ram:GlobalID"
        assert _xpath(xml, global_id + "/text()") == [siret]
        assert _xpath(xml, global_id + "/@schemeID") == ["0009"]
    plain = build_facturx_xml(sample_invoice(4), seller)
    assert _xpath(plain, "//ram:BuyerReference") == []


def test_xml_totals_are_those_of_the_invoice(seller: Seller) -> None:
    invoice = sample_invoice(9)
    xml = build_facturx_xml(invoice, seller)
    summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:"
    assert _xpath(xml, summation + "GrandTotalAmount/text()") == [f"{invoice.total_gross:.2f}"]
    assert _xpath(xml, summation + "TaxTotalAmount/text()") == [f"{invoice.total_vat:.2f}"]
    rates = _xpath(
        xml, "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:BasisAmount/text()"
    )
    assert rates == [f"{vat.base:.2f}" for vat in invoice.vat_breakdown()]


def test_final_document_declares_pdfa3_with_output_intent(seller: Seller) -> None:
    pdf = render_final_invoice(sample_invoice(2), seller)
    assert b"<pdfaid:part>3</pdfaid:part>" in pdf
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in pdf
    assert b"/GTS_PDFA1" in pdf and b"/DestOutputProfile" in pdf
    assert b"/AFRelationship /Data" in pdf
    assert b"fx:ConformanceLevel>EN 16931<" in pdf
    assert b"Helvetica" not in pdf


def test_xml_failing_xsd_is_refused_naming_invoice_and_field(seller: Seller) -> None:
    xml = build_facturx_xml(sample_invoice(1), seller).replace(
        b"<ram:TypeCode>380</ram:TypeCode>", b"<ram:TypeCodeX>380</ram:TypeCodeX>"
    )
    with pytest.raises(DocumentError, match=r"FA2024-000002.*TypeCodeX"):
        check_facturx_xml(xml, "FA2024-000002")


def test_inconsistent_totals_are_refused_naming_the_field(seller: Seller) -> None:
    invoice = dataclasses.replace(sample_invoice(1), total_vat=sample_invoice(1).total_vat + 1)
    with pytest.raises(DocumentError, match=rf"{invoice.number}.*BT-110"):
        render_final_invoice(invoice, seller)


def test_missing_seller_vat_number_is_refused(seller: Seller) -> None:
    with pytest.raises(DocumentError, match="BT-31"):
        render_final_invoice(sample_invoice(1), dataclasses.replace(seller, vat_number=""))


def test_facturx_still_extractable_and_valid_after_signing(seller: Seller, signer: Signer) -> None:
    invoice = sample_invoice(6, chorus=True)
    signed = signer.sign(render_final_invoice(invoice, seller))
    _, embedded = facturx.get_xml_from_pdf(signed, check_xsd=True)
    assert embedded == build_facturx_xml(invoice, seller)


@pytest.mark.parametrize(
    "title",
    [
        "Facture FA-1",
        "Avoir A&B <n°1> \"x\" 'y' é € @@title@@",
        "ligne\navec\ttab",
        "retour\rchariot",
    ],
)
def test_the_cached_xmp_packet_is_the_one_the_library_builds(title: str) -> None:
    moment = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)
    args = (title, "SARL Dupont & Fils", "Facture <client>", "facture, FA-1", moment)
    stamp = "2026-12-06T03:04:05+00:00"
    assert postier_facturx._xmp(*args) == postier_facturx._build_xmp(*args[:4], stamp).encode()


def _awkward_invoices(seller: Seller) -> list[tuple[Invoice, Seller]]:
    """Every shape of CII the builder makes, and text that needs escaping everywhere."""
    awkward = "A&B <C> \"D\" 'E' ]]> x\r\ny\tz é € 𝄞"
    plain = [(sample_invoice(index), seller) for index in range(12)]
    base = sample_invoice(3, chorus=True, due_dates=3, deliver_elsewhere=True)
    odd_customer = dataclasses.replace(
        base.customer, name=awkward, einvoicing_scheme='0225"&<\t\n\r>'
    )
    odd_line = dataclasses.replace(base.lines[0], description=awkward)
    return [
        *plain,
        (base, seller),
        (sample_invoice(5, kind=InvoiceKind.AVOIR), seller),
        (sample_invoice(6, payment_mode=PaymentMode.PRELEVEMENT), seller),
        (sample_invoice(7, payment_mode=PaymentMode.LCR, due_dates=2), seller),
        (
            sample_invoice(8, deliver_elsewhere=True),
            dataclasses.replace(seller, option_debits=True),
        ),
        (
            dataclasses.replace(
                base, customer=odd_customer, lines=(odd_line, *base.lines[1:]), currency='E&<">'
            ),
            dataclasses.replace(seller, name=awkward),
        ),
    ]


def test_the_cii_written_directly_is_the_one_lxml_elementmaker_writes(
    seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = _awkward_invoices(seller)
    direct = [build_facturx_xml(invoice, own_seller) for invoice, own_seller in cases]
    ns = postier_facturx.NS
    for prefix in ("rsm", "ram", "udt", "qdt"):
        maker = ElementMaker(namespace=ns[prefix], nsmap=ns)
        monkeypatch.setattr(postier_facturx, prefix.upper(), maker)
    monkeypatch.setattr(
        postier_facturx,
        "serialise",
        lambda root, _: etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
    )
    with_lxml = [build_facturx_xml(invoice, own_seller) for invoice, own_seller in cases]
    assert direct == with_lxml
    assert b"A&amp;B &lt;C&gt;" in direct[-1]


def test_text_lxml_refuses_is_still_refused_and_mixed_text_is_kept() -> None:
    e = Maker("p")
    nsmap = {"p": "urn:p"}
    with pytest.raises(ValueError, match="XML compatible"):
        serialise(e.Root(e.Name("bell \x07")), nsmap)
    mixed = e.Root("head", e.A("a", x="1"), "tail", e.B(), e.C(""), "end")
    expected = etree.tostring(to_lxml(mixed, nsmap), xml_declaration=True, encoding="UTF-8")
    assert serialise(mixed, nsmap) == expected
    assert b'<p:A x="1">a</p:A>tail<p:B/><p:C></p:C>end</p:Root>' in expected


def _is_xml_char(code: int) -> bool:
    """XML 1.0's `Char` production."""
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _written(write: Callable[[], bytes]) -> bytes | tuple[type, str]:
    try:
        return write()
    except ValueError as error:  # a lone surrogate: UnicodeEncodeError
        return type(error), str(error)


def test_every_character_is_written_or_refused_as_lxml_does() -> None:
    """Each Unicode character, in a text and in an attribute value: the bytes lxml writes, or
    the error lxml raises."""
    nsmap = {"p": "urn:p"}
    e, lxml_e = Maker("p"), ElementMaker(namespace="urn:p", nsmap=nsmap)

    def compare(text: str, value: str) -> None:
        direct = _written(lambda: serialise(e.Root(e.Name(text, a=value)), nsmap))
        with_lxml = _written(
            lambda: etree.tostring(
                lxml_e.Root(lxml_e.Name(text, a=value)), xml_declaration=True, encoding="UTF-8"
            )
        )
        assert direct == with_lxml, f"{text[:3]!r} in a text, {value[:3]!r} in an attribute"

    codes = range(0x110000)
    accepted = "".join(chr(code) for code in codes if _is_xml_char(code))
    compare(accepted, accepted)
    for code in codes:
        if not _is_xml_char(code):
            compare(f"a{chr(code)}b", "c")
            compare("c", f"a{chr(code)}b")


def test_the_pdfa_objects_formatted_once_are_those_reportlab_formats_each_time(
    seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)  # a fixed /ID: two renders can be compared
    moment = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)
    invoices = [
        sample_invoice(1),
        sample_invoice(2, kind=InvoiceKind.AVOIR),
        sample_invoice(3, lines=60),
    ]
    cached = [render_final_invoice(invoice, seller, moment=moment) for invoice in invoices]
    monkeypatch.setattr(postier_facturx, "_constant", lambda make, **refs: make(**refs))
    formatted_each_time = [render_final_invoice(i, seller, moment=moment) for i in invoices]
    assert cached == formatted_each_time
    assert b"/DestOutputProfile 5 0 R" in cached[0]


def test_the_streams_written_from_templates_are_those_reportlab_formats(
    seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The factur-x.xml and XMP streams, their dictionaries formatted once per process: the
    same bytes as reportlab's own stream objects, for every shape of CII and awkward text."""
    monkeypatch.setattr(rl_config, "invariant", 1)  # a fixed /ID: two renders can be compared
    moment = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)
    cases = _awkward_invoices(seller)
    templated = [render_final_invoice(i, own_seller, moment=moment) for i, own_seller in cases]
    monkeypatch.setattr(postier_facturx, "_EmbeddedFile", postier_facturx._embedded_file_stream)
    monkeypatch.setattr(postier_facturx, "_Metadata", postier_facturx._metadata_stream)
    formatted_each_time = [
        render_final_invoice(i, own_seller, moment=moment) for i, own_seller in cases
    ]
    assert templated == formatted_each_time
    # The XML, compressed at zlib's fastest level, still reads back whole from every document.
    for (invoice, own_seller), pdf in zip(cases, templated, strict=True):
        _, embedded = facturx.get_xml_from_pdf(pdf, check_xsd=False)
        assert embedded == build_facturx_xml(invoice, own_seller)


def test_a_document_rendered_from_its_xml_made_beforehand_is_the_same(
    seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk makes its invoices' XML first, then their documents: the same bytes as a
    document that makes its own."""
    monkeypatch.setattr(rl_config, "invariant", 1)  # a fixed /ID: two renders can be compared
    moment = datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC)
    for invoice, own_seller in _awkward_invoices(seller):
        xml = checked_facturx_xml(invoice, own_seller)
        assert render_final_invoice(invoice, own_seller, moment=moment, xml=xml) == (
            render_final_invoice(invoice, own_seller, moment=moment)
        )


def test_the_xml_made_beforehand_is_checked_as_the_render_checks_it(seller: Seller) -> None:
    invoice = dataclasses.replace(sample_invoice(1), total_vat=sample_invoice(1).total_vat + 1)
    with pytest.raises(DocumentError, match=rf"{invoice.number}.*BT-110"):
        checked_facturx_xml(invoice, seller)
