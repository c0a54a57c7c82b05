"""Realistic synthetic invoices and sellers, for tests, benchmarks and layout previews.

Deterministic (seeded): the same arguments always give the same invoices.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from postier.domain.models import (
    Address,
    CreditedInvoice,
    Customer,
    Delivery,
    DueDate,
    Invoice,
    InvoiceLine,
    Seller,
)
from postier.domain.money import to_cents
from postier.domain.states import Channel, InvoiceKind, LineNature, PaymentMode, SendState

B, S = LineNature.BIEN, LineNature.SERVICE
# description, ERP unit (include/templates/documents/units.toml), unit price, VAT rate, nature
_PRODUCTS: tuple[tuple[str, str, Decimal, Decimal, LineNature], ...] = (
    ("Prestation de conseil — analyse des besoins", "J", Decimal("850.00"), Decimal("20"), S),
    ("Maintenance évolutive du logiciel de gestion", "H", Decimal("95.00"), Decimal("20"), S),
    ("Ramettes de papier A4 80 g recyclé", "CT", Decimal("32.40"), Decimal("20"), B),
    (
        "Livres techniques « Comptabilité générale », édition 2024",
        "U",
        Decimal("42.00"),
        Decimal("5.5"),
        B,
    ),
    (
        "Transport et livraison sur site, zone Île-de-France",
        "FORFAIT",
        Decimal("120.00"),
        Decimal("20"),
        S,
    ),
    (
        "Formation des utilisateurs à l'outil de facturation électronique",
        "J",
        Decimal("1200.00"),
        Decimal("20"),
        S,
    ),
    ("Repas d'équipe lors du séminaire de lancement", "U", Decimal("28.50"), Decimal("10"), S),
    (
        "Abonnement annuel à la plateforme d'échanges dématérialisés",
        "AN",
        Decimal("2400.00"),
        Decimal("20"),
        S,
    ),
)

_CITIES = (
    ("75011", "Paris"),
    ("69003", "Lyon"),
    ("13008", "Marseille"),
    ("33000", "Bordeaux"),
    ("59800", "Lille"),
    ("44000", "Nantes"),
    ("67000", "Strasbourg"),
)


SAMPLE_SELLER_NAME = "Établissements Dupré & Fils"


def sample_seller() -> Seller:
    return Seller(
        name=SAMPLE_SELLER_NAME,
        legal_form="SAS",
        capital="150 000 €",
        address=Address("12 rue des Écoles", "Zone d'activité du Moulin", "45000", "Orléans"),
        siren="732829320",
        siret="73282932000074",
        vat_number="FR44732829320",
        rcs="RCS Orléans 732 829 320",
        iban="FR7630006000011234567890189",
        bic="AGRIFRPPXXX",
        email="facturation@dupre-fils.fr",
        late_penalty_rate="taux directeur de la BCE majoré de 10 points",
        discount_terms="Pas d'escompte pour paiement anticipé.",
    )


def _line(rng: random.Random, position: int) -> InvoiceLine:
    description, unit, price, rate, nature = rng.choice(_PRODUCTS)
    quantity = Decimal(rng.choice((1, 1, 2, 3, 5, 10, 12, 25))) * (
        Decimal("0.5") if unit in ("J", "H") and rng.random() < 0.2 else Decimal(1)
    )
    return InvoiceLine(
        position=position,
        description=description,
        quantity=quantity,
        unit=unit,
        unit_price=price,
        vat_rate=rate,
        net_amount=to_cents(quantity * price),
        nature=nature,
    )


def sample_customer(
    index: int = 0, *, channel: Channel = Channel.PAPIER, chorus: bool = False
) -> Customer:
    postal_code, city = _CITIES[index % len(_CITIES)]
    return Customer(
        code=f"C{index:05d}",
        name=f"Société Générale d'Équipement n°{index}"
        if not chorus
        else f"Mairie de Saint-Étienne-{index}",
        address=Address(f"{index % 200 + 1} avenue Jean-Jaurès", None, postal_code, city),
        emails=(f"compta{index}@exemple.fr",),
        channel=Channel.CHORUS if chorus else channel,
        contact_name="Mme Hélène Lefèvre",
        siren="552100554",
        siret="55210055400013",
        vat_number="FR03552100554",
        chorus_service_code="SERV-ACHATS" if chorus else None,
        iban="FR7630004000031234567890143",
        bic="BNPAFRPPXXX",
    )


def sample_invoice(
    index: int = 0,
    *,
    lines: int | None = None,
    kind: InvoiceKind = InvoiceKind.FACTURE,
    payment_mode: PaymentMode = PaymentMode.VIREMENT,
    due_dates: int = 0,
    chorus: bool = False,
    seed: int | None = None,
    deliver_elsewhere: bool = False,
) -> Invoice:
    """One invoice whose totals are consistent (nets, VAT per rate, gross), delivered two days
    before its date (at another place with `deliver_elsewhere`); a credit note cites the
    invoice it corrects."""
    rng = random.Random(index if seed is None else seed)
    count = lines if lines is not None else rng.randint(1, 12)
    invoice_lines = tuple(_line(rng, position) for position in range(1, count + 1))
    customer = sample_customer(index, chorus=chorus)
    invoice_date = date(2024, 3, 1) + timedelta(days=index % 28)
    draft = Invoice(
        id=index + 1,
        number=f"{'AV' if kind is InvoiceKind.AVOIR else 'FA'}2024-{index + 1:06d}",
        kind=kind,
        customer=customer,
        invoice_date=invoice_date,
        due_date=invoice_date + timedelta(days=30),
        batch_number=100 + index // 50,
        created_by="mdurand",
        created_at=datetime(2024, 3, 1, 8, 30, tzinfo=UTC),
        payment_mode=payment_mode,
        total_net=Decimal(0),
        total_vat=Decimal(0),
        total_gross=Decimal(0),
        currency="EUR",
        send_state=SendState.EN_ATTENTE,
        lines=invoice_lines,
        due_dates=(),
        chorus_service_code="SERV-ACHATS" if chorus else None,
        chorus_engagement_number=f"EJ{index:08d}" if chorus else None,
        credited_invoice=(
            CreditedInvoice(f"FA2024-{index + 1:06d}", invoice_date - timedelta(days=12))
            if kind is InvoiceKind.AVOIR
            else None
        ),
        delivery=Delivery(
            invoice_date - timedelta(days=2),
            "Entrepôt de réception" if deliver_elsewhere else None,
            Address("ZI des Bruyères, quai 4", None, "91160", "Longjumeau")
            if deliver_elsewhere
            else None,
        ),
    )
    total_net = sum((line.net_amount for line in invoice_lines), Decimal(0))
    total_vat = sum((vat.amount for vat in draft.vat_breakdown()), Decimal(0))
    total_gross = total_net + total_vat
    schedule: tuple[DueDate, ...] = ()
    if due_dates > 1:
        share = to_cents(total_gross / due_dates)
        amounts = [share] * (due_dates - 1) + [total_gross - share * (due_dates - 1)]
        schedule = tuple(
            DueDate(invoice_date + timedelta(days=30 * (n + 1)), amount)
            for n, amount in enumerate(amounts)
        )
    return dataclasses.replace(
        draft,
        total_net=total_net,
        total_vat=total_vat,
        total_gross=total_gross,
        due_dates=schedule,
        due_date=schedule[-1].due_date if schedule else draft.due_date,
    )


def sample_invoices(count: int, *, start: int = 0, **options: object) -> Iterator[Invoice]:
    """A lazy stream of invoices (for print runs that must not hold them all in memory)."""
    for index in range(start, start + count):
        yield sample_invoice(index, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SampleIdentity:
    """A throwaway test CA and a signing certificate it issued, as PKCS#12 (never committed)."""

    pkcs12: bytes
    passphrase: bytes
    ca_cert_der: bytes
    signer_cert_der: bytes


def sample_identity(
    passphrase: bytes = b"secret",
    *,
    common_name: str = "Postier Test",
    organization: str = SAMPLE_SELLER_NAME,
) -> SampleIdentity:
    """Generate a fresh test CA + signing certificate (RSA 2048) naming `organization`, and
    bundle them as PKCS#12."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Postier Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle = pkcs12.serialize_key_and_certificates(
        b"postier", key, cert, [ca_cert], serialization.BestAvailableEncryption(passphrase)
    )
    return SampleIdentity(
        pkcs12=bundle,
        passphrase=passphrase,
        ca_cert_der=ca_cert.public_bytes(serialization.Encoding.DER),
        signer_cert_der=cert.public_bytes(serialization.Encoding.DER),
    )
