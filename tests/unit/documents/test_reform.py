"""Final documents under the French e-invoicing reform: every kind of document passes the
Factur-X XSD, the Factur-X EN 16931 schematron and the BR-FR (Flux 2) schematron; identifiers,
billing framework, electronic addresses, credited invoice, units, delivery and the printed
mentions."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import facturx
import pytest
from facturx_validation import FacturxValidator
from lxml import etree
from pdf_reading import pdf_text

from postier.documents import build_facturx_xml, render_final_invoice, render_invoice
from postier.documents.samples import sample_invoice
from postier.documents.units import units
from postier.domain.models import Customer, Delivery, Invoice, InvoiceLine, Seller
from postier.domain.states import InvoiceKind, LineNature, PaymentMode
from postier.errors import DocumentError

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
GOODS, SERVICE = LineNature.BIEN, LineNature.SERVICE


def pdf_lines(pdf: bytes) -> list[str]:
    return [line.strip() for page in pdf_text(pdf) for line in page.splitlines()]


def xpath(xml: bytes, path: str) -> list[str]:
    return [str(v) for v in etree.fromstring(xml).xpath(path, namespaces=NS)]


def with_lines(invoice: Invoice, *lines: tuple[str, str, LineNature]) -> Invoice:
    """The invoice with these (description, ERP unit, nature) lines at 100 € HT, 20 %."""
    new = tuple(
        InvoiceLine(n, text, Decimal(2), unit, Decimal(50), Decimal(20), Decimal(100), nature)
        for n, (text, unit, nature) in enumerate(lines, start=1)
    )
    net = Decimal(100) * len(new)
    return dataclasses.replace(
        invoice,
        lines=new,
        total_net=net,
        total_vat=net / 5,
        total_gross=net * Decimal("1.2"),
        due_dates=(),
    )


def zero_invoice() -> Invoice:
    invoice = sample_invoice(9, lines=2)
    free = tuple(
        dataclasses.replace(line, unit_price=Decimal(0), net_amount=Decimal(0))
        for line in invoice.lines
    )
    zero = Decimal("0.00")
    return dataclasses.replace(
        invoice, lines=free, total_net=zero, total_vat=zero, total_gross=zero, due_dates=()
    )


def several_rates() -> Invoice:
    invoice = next(
        sample_invoice(i, lines=8)
        for i in range(100)
        if len(sample_invoice(i, lines=8).vat_breakdown()) >= 3
    )
    return invoice


DOCUMENTS = {
    "facture": lambda: sample_invoice(1),
    "avoir": lambda: sample_invoice(2, kind=InvoiceKind.AVOIR),
    "plusieurs taux de TVA": several_rates,
    "facture à 0 €": zero_invoice,
    "acheteur public (code service, engagement)": lambda: sample_invoice(4, chorus=True),
    "biens": lambda: with_lines(sample_invoice(5), ("Papier", "CT", GOODS), ("Encre", "U", GOODS)),
    "services": lambda: with_lines(sample_invoice(6), ("Conseil", "J", SERVICE)),
    "biens et services": lambda: with_lines(
        sample_invoice(7), ("Papier", "CT", GOODS), ("Pose", "H", SERVICE)
    ),
    "livrée ailleurs, échéancier": lambda: sample_invoice(8, due_dates=3, deliver_elsewhere=True),
    "prélèvement": lambda: sample_invoice(10, payment_mode=PaymentMode.PRELEVEMENT),
    "LCR": lambda: sample_invoice(11, payment_mode=PaymentMode.LCR),
}


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_every_kind_of_document_passes_xsd_en16931_and_br_fr(
    kind: str, seller: Seller, facturx_validator: FacturxValidator
) -> None:
    invoice = DOCUMENTS[kind]()
    _, xml = facturx.get_xml_from_pdf(render_final_invoice(invoice, seller), check_xsd=False)
    report = facturx_validator.validate(xml)
    assert report.valid, report.explain()
    # Delivery date known: no empty element either (Factur-X warning PEPPOL-EN16931-R008).
    assert [w.rule for w in report.warnings] == []


def test_validator_catches_what_main_used_to_write(
    seller: Seller, facturx_validator: FacturxValidator
) -> None:
    """The checks can fail: a SIRET under scheme 0002 and no billing framework are fatal."""
    xml = build_facturx_xml(sample_invoice(1), seller)
    broken = xml.replace(b"<ram:ID>S1</ram:ID>", b"").replace(
        f'<ram:ID schemeID="0002">{seller.siren}<'.encode(),
        f'<ram:ID schemeID="0002">{seller.siret}<'.encode(),
    )
    rules = {a.rule for a in facturx_validator.validate(broken).fatal}
    assert {"BR-FR-08_BT-23", "BR-FR-10_BT-30", "BR-FR-32-LEGALID"} <= rules


@pytest.mark.parametrize(
    ("natures", "framework", "category"),
    [
        ((GOODS, GOODS), "B1", "livraison de biens"),
        ((SERVICE,), "S1", "prestation de services"),
        ((GOODS, SERVICE), "M1", "livraison de biens et prestation de services"),
    ],
)
def test_billing_framework_and_printed_category_follow_the_nature_of_the_lines(
    natures: tuple[LineNature, ...], framework: str, category: str, seller: Seller
) -> None:
    invoice = with_lines(sample_invoice(3), *((f"Ligne {n}", "U", n) for n in natures))
    xml = build_facturx_xml(invoice, seller)
    assert xpath(xml, "//ram:BusinessProcessSpecifiedDocumentContextParameter/ram:ID/text()") == [
        framework
    ]
    assert f"Catégorie de l'opération : {category}" in pdf_lines(render_invoice(invoice, seller))


def test_electronic_addresses_default_to_the_siren_under_0225(seller: Seller) -> None:
    invoice = sample_invoice(1)
    xml = build_facturx_xml(invoice, seller)
    buyer = "//ram:BuyerTradeParty/ram:URIUniversalCommunication/ram:URIID"
    assert xpath(xml, buyer + "/text()") == [invoice.customer.siren]
    assert xpath(xml, buyer + "/@schemeID") == ["0225"]
    own = dataclasses.replace(
        invoice,
        customer=dataclasses.replace(
            invoice.customer, einvoicing_address=f"{invoice.customer.siren}_FACTURES"
        ),
    )
    opted_seller = dataclasses.replace(seller, einvoicing_address=f"{seller.siren}_COMPTA")
    xml = build_facturx_xml(own, opted_seller)
    assert xpath(xml, buyer + "/text()") == [f"{invoice.customer.siren}_FACTURES"]
    seller_uri = "//ram:SellerTradeParty/ram:URIUniversalCommunication/ram:URIID"
    assert xpath(xml, seller_uri + "/text()") == [f"{seller.siren}_COMPTA"]
    assert xpath(xml, seller_uri + "/@schemeID") == ["0225"]


def test_buyer_without_siren_nor_address_is_refused(seller: Seller) -> None:
    invoice = sample_invoice(1)
    anonymous = dataclasses.replace(
        invoice, customer=dataclasses.replace(invoice.customer, siren=None, siret=None)
    )
    with pytest.raises(DocumentError, match="BT-49 adresse de facturation électronique"):
        render_final_invoice(anonymous, seller)


def test_credit_note_cites_its_invoice_in_xml_and_on_the_page(seller: Seller) -> None:
    credit = sample_invoice(2, kind=InvoiceKind.AVOIR)
    assert credit.credited_invoice is not None
    xml = build_facturx_xml(credit, seller)
    cited = "//ram:ApplicableHeaderTradeSettlement/ram:InvoiceReferencedDocument"
    assert xpath(xml, cited + "/ram:IssuerAssignedID/text()") == [credit.credited_invoice.number]
    assert xpath(xml, cited + "/ram:FormattedIssueDateTime/qdt:DateTimeString/text()") == [
        f"{credit.credited_invoice.invoice_date:%Y%m%d}"
    ]
    expected = (
        f"Avoir sur facture n° {credit.credited_invoice.number} "
        f"du {credit.credited_invoice.invoice_date:%d/%m/%Y}"
    )
    assert expected in pdf_lines(render_final_invoice(credit, seller))


def test_credit_note_without_its_invoice_is_refused(seller: Seller) -> None:
    orphan = dataclasses.replace(sample_invoice(2, kind=InvoiceKind.AVOIR), credited_invoice=None)
    with pytest.raises(DocumentError, match="BT-25 facture d'origine absente"):
        render_final_invoice(orphan, seller)


def test_xml_unit_codes_are_the_units_printed_on_the_page(seller: Seller) -> None:
    invoice = with_lines(
        sample_invoice(1),
        *(
            (f"Article {erp}", erp, GOODS)
            for erp in ("J", "H", "M2", "KG", "L", "M", "M3", "U", "CT", "FORFAIT")
        ),
    )
    pdf = render_final_invoice(invoice, seller)
    _, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    codes = xpath(xml, "//ram:BilledQuantity/@unitCode")
    assert codes == ["DAY", "HUR", "MTK", "KGM", "LTR", "MTR", "MTQ", "C62", "XCT", "LS"]
    # The page reads cell by cell: description, quantity, unit, …
    text = pdf_lines(pdf)
    printed = [text[text.index(line.description) + 2] for line in invoice.lines]
    assert printed == [
        "jour",
        "heure",
        "m²",
        "kg",
        "litre",
        "m",
        "m³",
        "unité",
        "carton",
        "forfait",
    ]
    label_of = {unit.code: unit.label for unit in units().values()}
    assert [label_of[code] for code in codes] == printed


def test_unknown_unit_refuses_the_final_document_with_its_reason(seller: Seller) -> None:
    invoice = with_lines(sample_invoice(1), ("Ligne", "U", GOODS), ("Sac", "SAC", GOODS))
    with pytest.raises(DocumentError, match=r"unité « SAC » de la ligne 2 absente de la table"):
        render_final_invoice(invoice, seller)


def test_delivery_is_written_only_when_known(seller: Seller) -> None:
    delivery = "//ram:ApplicableHeaderTradeDelivery"
    unknown = dataclasses.replace(sample_invoice(1), delivery=None)
    assert xpath(build_facturx_xml(unknown, seller), delivery + "/*") == []
    dated = sample_invoice(1)
    xml = build_facturx_xml(dated, seller)
    assert xpath(xml, delivery + "/ram:ShipToTradeParty") == []
    assert xpath(xml, delivery + "//udt:DateTimeString/text()") == [
        f"{dated.delivery.delivery_date:%Y%m%d}"  # type: ignore[union-attr]
    ]
    elsewhere = build_facturx_xml(sample_invoice(1, deliver_elsewhere=True), seller)
    assert xpath(elsewhere, delivery + "/ram:ShipToTradeParty/ram:Name/text()") == [
        "Entrepôt de réception"
    ]
    assert xpath(elsewhere, delivery + "//ram:CityName/text()") == ["Longjumeau"]


def test_page_prints_buyer_siren_and_delivery_address_only_when_elsewhere(
    seller: Seller,
) -> None:
    invoice = sample_invoice(1)
    text = pdf_lines(render_invoice(invoice, seller))
    assert any(f"SIREN {invoice.customer.siren}" in line for line in text)
    assert not any(line.startswith("Adresse de livraison") for line in text)
    same_place = dataclasses.replace(
        invoice, delivery=Delivery(date(2024, 3, 1), None, invoice.customer.address)
    )
    assert not any(
        line.startswith("Adresse de livraison")
        for line in pdf_lines(render_invoice(same_place, seller))
    )
    elsewhere = pdf_lines(render_invoice(sample_invoice(1, deliver_elsewhere=True), seller))
    assert (
        "Adresse de livraison : Entrepôt de réception, ZI des Bruyères, quai 4, 91160 Longjumeau"
        in elsewhere
    )


def test_option_for_vat_on_debits_is_printed_and_written_when_the_seller_opted(
    seller: Seller,
) -> None:
    services = with_lines(sample_invoice(1), ("Conseil", "J", SERVICE))
    mention = "Option pour le paiement de la taxe d'après les débits"
    assert mention not in pdf_lines(render_invoice(services, seller))
    opted = dataclasses.replace(seller, option_debits=True)
    assert mention in pdf_lines(render_invoice(services, opted))
    xml = build_facturx_xml(services, opted)
    assert xpath(xml, "//ram:IncludedNote[ram:SubjectCode='TXD']/ram:Content/text()") == [mention]
    # The option concerns services: an invoice of goods only does not carry it.
    goods = with_lines(sample_invoice(1), ("Papier", "CT", GOODS))
    assert mention not in pdf_lines(render_invoice(goods, opted))


def test_buyer_siren_falls_back_on_its_siret(seller: Seller) -> None:
    invoice = sample_invoice(1)
    customer: Customer = dataclasses.replace(invoice.customer, siren=None)
    xml = build_facturx_xml(dataclasses.replace(invoice, customer=customer), seller)
    legal = "//ram:BuyerTradeParty/ram:SpecifiedLegalOrganization/ram:ID/text()"
    assert xpath(xml, legal) == [invoice.customer.siret[:9]]  # type: ignore[index]
