from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postier.documents import Signer, SigningConfig, render_final_invoice, verify_pdf
from postier.documents.invoice_pdf import render_invoice
from postier.documents.samples import SampleIdentity, sample_identity, sample_invoice
from postier.documents.signing import _SimplePdf
from postier.domain.models import Seller
from postier.errors import SigningError


def test_signature_validates_against_test_ca(
    seller: Seller, signer: Signer, identity: SampleIdentity
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    signed = signer.sign(render_final_invoice(sample_invoice(1), seller))
    result = verify_pdf(signed, trust_roots=[identity.ca_cert_der])
    assert result.valid
    (check,) = result.signatures
    assert check.intact and check.trusted and check.covers_whole_document
    assert "Postier Test" in check.signer
    assert check.signing_time is not None and check.signing_time >= before
    assert not check.timestamped


def test_one_changed_byte_breaks_the_signature(
    seller: Seller, signer: Signer, identity: SampleIdentity
) -> None:
    unsigned = render_final_invoice(sample_invoice(1), seller)
    signed = bytearray(signer.sign(unsigned))
    signed[len(unsigned) // 2] ^= 0x01  # inside a compressed content stream
    result = verify_pdf(bytes(signed), trust_roots=[identity.ca_cert_der])
    assert not result.valid
    assert not result.signatures[0].intact


def test_signature_from_unknown_ca_is_not_trusted(seller: Seller, signer: Signer) -> None:
    other_ca = sample_identity(common_name="Autre").ca_cert_der
    result = verify_pdf(
        signer.sign(render_invoice(sample_invoice(1), seller)), trust_roots=[other_ca]
    )
    assert result.signatures[0].intact
    assert not result.signatures[0].trusted
    assert not result.valid


def test_unsigned_pdf_is_reported_invalid(seller: Seller) -> None:
    result = verify_pdf(render_invoice(sample_invoice(1), seller), trust_roots=[])
    assert not result.valid and result.signatures == ()


def test_signing_is_an_incremental_update_keeping_the_signed_bytes(
    seller: Seller, signer: Signer
) -> None:
    unsigned = render_final_invoice(sample_invoice(1), seller)
    signed = signer.sign(unsigned)
    assert signed.startswith(unsigned)
    assert b"/SubFilter /ETSI.CAdES.detached" in signed


def test_second_signature_goes_through_pyhanko_and_both_validate(
    seller: Seller, signer: Signer, identity: SampleIdentity
) -> None:
    twice = signer.sign(signer.sign(render_final_invoice(sample_invoice(1), seller)))
    result = verify_pdf(twice, trust_roots=[identity.ca_cert_der])
    assert [c.field_name for c in result.signatures] == ["Signature1", "Signature2"]
    assert result.valid


def test_a_pdf_with_an_earlier_revision_is_signed_through_pyhanko(
    seller: Seller, signer: Signer, identity: SampleIdentity
) -> None:
    from pyhanko.pdf_utils.generic import NameObject
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(render_final_invoice(sample_invoice(2), seller)))
    writer.root[NameObject("/PageLayout")] = NameObject("/OneColumn")
    writer.update_root()
    # The revision rewrites every object the simple signer reads: only its /Prev tells.
    pages = writer.root.raw_get("/Pages")
    writer.mark_update(pages)
    writer.mark_update(pages.get_object()["/Kids"].raw_get(0))
    revised = io.BytesIO()
    writer.write(revised)
    assert revised.getvalue().count(b"startxref") == 2 and b"/Prev" in revised.getvalue()
    assert _SimplePdf.parse(revised.getvalue()) is None  # not the simple signer's case
    result = verify_pdf(signer.sign(revised.getvalue()), trust_roots=[identity.ca_cert_der])
    assert result.valid and [c.field_name for c in result.signatures] == ["Signature1"]


def test_timestamper_makes_a_b_t_signature(seller: Seller, identity: SampleIdentity) -> None:
    from asn1crypto import keys, x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    key, cert, _ = pkcs12.load_key_and_certificates(identity.pkcs12, identity.passphrase)
    assert key is not None and cert is not None
    stamper = DummyTimeStamper(
        tsa_cert=x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        tsa_key=keys.PrivateKeyInfo.load(
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ),
    )
    signer = Signer(SigningConfig(identity.pkcs12, identity.passphrase), timestamper=stamper)
    signed = signer.sign(render_final_invoice(sample_invoice(1), seller))
    result = verify_pdf(signed, trust_roots=[identity.ca_cert_der])
    assert result.signatures[0].timestamped
    assert result.signatures[0].intact


def test_wrong_passphrase_is_a_signing_error(identity: SampleIdentity) -> None:
    with pytest.raises(SigningError, match="PKCS#12"):
        Signer(SigningConfig(identity.pkcs12, b"wrong"))


def test_config_from_file_and_verify_from_path(
    tmp_path: Path, seller: Seller, identity: SampleIdentity
) -> None:
    p12 = tmp_path / "signing.p12"
    p12.write_bytes(identity.pkcs12)
    signer = Signer(SigningConfig.from_file(p12, identity.passphrase))
    out = tmp_path / "facture.pdf"
    out.write_bytes(signer.sign(render_final_invoice(sample_invoice(1), seller)))
    result = verify_pdf(out, trust_roots=[identity.ca_cert_der])
    assert result.valid and result.source == str(out)
    assert identity.passphrase.decode() not in repr(signer._config)
