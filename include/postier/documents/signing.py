"""PAdES signatures (baseline B-B, or B-T with an RFC 3161 timestamp) of final invoice PDFs.

A `Signer` loads the PKCS#12 once and signs many documents. Each signature is an incremental
update (the signed Factur-X revision stays untouched, its XML still extractable): an invisible
signature field, a signature dictionary and a detached CAdES container.

Why not `pyhanko.sign.signers.sign_pdf` per document: with a loaded `SimpleSigner` it still
re-imports the private key from DER at every signature, signs twice (a dry run to size the
/Contents placeholder), and parses and rewrites the PDF object model — about 100 ms per invoice,
ten times the rendering. For the PDFs reportlab writes (classic cross-reference table, no
existing form) we append the update ourselves and build the CMS with asn1crypto around one RSA
operation; any other PDF goes through pyHanko's own signer. Validation is always pyHanko's.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import algos, cms, core, tsp  # tsp registers the timestamp OIDs
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from postier.errors import SigningError

FIELD_NAME = "Signature1"
#: Room for the CMS container (hex digits are twice as many). A timestamp token adds ~6 KB.
CONTENTS_BYTES = 8192
CONTENTS_BYTES_TIMESTAMPED = 24576


@dataclass(frozen=True)
class SigningConfig:
    """Where the signing key comes from (the `postier_signing` connection)."""

    pkcs12: bytes = field(repr=False)
    passphrase: bytes | None = field(default=None, repr=False)
    timestamp_url: str | None = None
    reason: str | None = None
    location: str | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, passphrase: bytes | None, timestamp_url: str | None = None
    ) -> SigningConfig:
        return cls(Path(path).read_bytes(), passphrase, timestamp_url)


class Signer:
    """Signs PDFs with one key, loaded once (`Signer(config)` then `signer.sign(pdf)` many times).

    `timestamper` (a pyHanko `TimeStamper`) overrides the one built from `timestamp_url`; tests
    use pyHanko's `DummyTimeStamper`.
    """

    def __init__(self, config: SigningConfig, *, timestamper: object | None = None) -> None:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(config.pkcs12, config.passphrase)
        except Exception as error:  # cryptography raises ValueError, TypeError…
            raise SigningError(
                "Certificat de signature illisible (fichier PKCS#12 ou mot de passe incorrect)."
            ) from error
        if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
            raise SigningError("Le PKCS#12 doit contenir une clé RSA et son certificat.")
        self._key = key
        der = cert.public_bytes(serialization.Encoding.DER)
        self.certificate = asn1_x509.Certificate.load(der)
        self._chain = [
            asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in extra
        ]
        self._config = config
        if timestamper is None and config.timestamp_url:
            from pyhanko.sign.timestamps import HTTPTimeStamper

            timestamper = HTTPTimeStamper(config.timestamp_url)
        self._timestamper = timestamper
        self._contents_bytes = CONTENTS_BYTES_TIMESTAMPED if timestamper else CONTENTS_BYTES
        # Constant parts of every CMS container, built once.
        from pyhanko.sign.general import as_signing_certificate_v2

        self._signing_certificate = as_signing_certificate_v2(self.certificate, "sha256")
        self._sid_der = cms.IssuerAndSerialNumber(
            {"issuer": self.certificate.issuer, "serial_number": self.certificate.serial_number}
        ).dump()
        self._content_type_attr = cms.CMSAttribute(
            {"type": "content_type", "values": ["data"]}
        ).dump()
        self._ess_attr = cms.CMSAttribute(
            {"type": "signing_certificate_v2", "values": [self._signing_certificate]}
        ).dump()
        self._certificates_der = _der(
            0xA0, b"".join(c.dump() for c in [self.certificate, *self._chain])
        )
        self._pyhanko_signer: object | None = None

    @property
    def signer_name(self) -> str:
        return str(self.certificate.subject.human_friendly)

    # ------------------------------------------------------------------ CMS

    def cms_signature(self, document_digest: bytes) -> bytes:
        """A detached CAdES (PAdES B-B, or B-T) container over a SHA-256 document digest.

        DER assembled from parts encoded once in `__init__`: asn1crypto would re-encode the
        whole certificate chain at every signature (most of the signing time).
        """
        digest_attr = _der(0x30, _OID_MESSAGE_DIGEST + _der(0x31, _der(0x04, document_digest)))
        # DER: the members of a SET OF are sorted by their encodings.
        attrs = b"".join(sorted((self._content_type_attr, digest_attr, self._ess_attr)))
        signature = self._key.sign(_der(0x31, attrs), padding.PKCS1v15(), hashes.SHA256())
        unsigned = b""
        if self._timestamper is not None:
            token = self._timestamp(hashlib.sha256(signature).digest())
            attribute = _der(0x30, _OID_TIMESTAMP_TOKEN + _der(0x31, token.dump()))
            unsigned = _der(0xA1, attribute)
        signer_info = _der(
            0x30,
            _DER_INTEGER_1
            + self._sid_der
            + _SHA256_DER
            + _der(0xA0, attrs)
            + _SHA256_RSA_DER
            + _der(0x04, signature)
            + unsigned,
        )
        signed_data = _der(
            0x30,
            _DER_INTEGER_1
            + _der(0x31, _SHA256_DER)
            + _DATA_CONTENT_INFO
            + self._certificates_der
            + _der(0x31, signer_info),
        )
        return _der(0x30, _OID_SIGNED_DATA + _der(0xA0, signed_data))

    def _timestamp(self, digest: bytes) -> cms.ContentInfo:
        try:
            token: cms.ContentInfo = asyncio.run(
                self._timestamper.async_timestamp(digest, "sha256")  # type: ignore[union-attr]
            )
        except Exception as error:
            raise SigningError(
                f"Horodatage impossible auprès de {self._config.timestamp_url} : {error}"
            ) from error
        return token

    # ------------------------------------------------------------------ PDF

    def sign(self, pdf: bytes, *, moment: datetime | None = None) -> bytes:
        """The PDF with an invisible PAdES signature appended as an incremental update."""
        structure = _SimplePdf.parse(pdf)
        if structure is None:
            return self._sign_with_pyhanko(pdf)
        return self._sign_simple(pdf, structure, moment or datetime.now(UTC))

    def _sign_simple(self, pdf: bytes, doc: _SimplePdf, moment: datetime) -> bytes:
        sig_num, widget_num = doc.size, doc.size + 1
        size = doc.size + 2
        placeholder_len = self._contents_bytes * 2
        pdf_date = moment.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")
        extras = ""
        if self._config.reason:
            extras += f" /Reason {_pdf_text(self._config.reason)}"
        if self._config.location:
            extras += f" /Location {_pdf_text(self._config.location)}"
        # The update is built apart and joined to the PDF once (no copy of the whole PDF to
        # grow); `start` is where it begins in the signed file.
        out = bytearray() if pdf.endswith(b"\n") else bytearray(b"\n")
        start = len(pdf)
        offsets: dict[int, int] = {}

        offsets[sig_num] = start + len(out)
        out += (
            f"{sig_num} 0 obj\n<< /Type /Sig /Filter /Adobe.PPKLite "
            f"/SubFilter /ETSI.CAdES.detached /M ({pdf_date}){extras}\n/ByteRange "
        ).encode()
        byte_range_at = len(out)
        out += b"[0 0000000000 0000000000 0000000000]" + b"\n/Contents <"
        contents_at = len(out) - 1
        out += b"0" * placeholder_len + b">\n>>\nendobj\n"
        contents_end_at = contents_at + placeholder_len + 2

        offsets[widget_num] = start + len(out)
        # Invisible: zero rectangle (PDF/A accepts it without appearance); Print + Locked flags.
        out += (
            f"{widget_num} 0 obj\n<< /Type /Annot /Subtype /Widget /FT /Sig /T ({FIELD_NAME}) "
            f"/V {sig_num} 0 R /Rect [0 0 0 0] /F 132 /P {doc.page_num} 0 R >>\nendobj\n"
        ).encode()
        offsets[doc.page_num] = start + len(out)
        out += f"{doc.page_num} 0 obj\n".encode()
        out += doc.page_body[: doc.page_body.rindex(b">>")]
        out += f" /Annots [{widget_num} 0 R]\n>>\nendobj\n".encode()
        offsets[doc.root_num] = start + len(out)
        out += f"{doc.root_num} 0 obj\n".encode()
        out += doc.root_body[: doc.root_body.rindex(b">>")]
        out += f" /AcroForm << /Fields [{widget_num} 0 R] /SigFlags 3 >>\n>>\nendobj\n".encode()

        xref_at = start + len(out)
        out += b"xref\n"
        for number in sorted(offsets):
            out += f"{number} 1\n{offsets[number]:010d} 00000 n \n".encode()
        trailer = f"/Size {size} /Root {doc.root_num} 0 R /Prev {doc.xref_offset}"
        if doc.info:
            trailer += f" /Info {doc.info}"
        if doc.id:
            trailer += f" /ID {doc.id}"
        out += f"trailer\n<< {trailer} >>\nstartxref\n{xref_at}\n%%EOF\n".encode()

        contents_start, contents_end = start + contents_at, start + contents_end_at
        byte_range = (
            f"[0 {contents_start:010d} {contents_end:010d} {start + len(out) - contents_end:010d}]"
        ).encode()
        out[byte_range_at : byte_range_at + len(byte_range)] = byte_range
        digest = hashlib.sha256(pdf)
        digest.update(memoryview(out)[:contents_at])
        digest.update(memoryview(out)[contents_end_at:])
        container = self.cms_signature(digest.digest()).hex().encode()
        if len(container) > placeholder_len:
            raise SigningError("Signature trop volumineuse pour l'emplacement réservé.")
        out[contents_at + 1 : contents_at + 1 + len(container)] = container
        return pdf + out

    def _sign_with_pyhanko(self, pdf: bytes) -> bytes:
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers

        if self._pyhanko_signer is None:
            self._pyhanko_signer = signers.SimpleSigner.load_pkcs12_data(
                self._config.pkcs12, [], self._config.passphrase
            )
        meta = signers.PdfSignatureMetadata(
            field_name=_free_field_name(pdf),
            subfilter=fields.SigSeedSubFilter.PADES,
            md_algorithm="sha256",
            reason=self._config.reason,
            location=self._config.location,
        )
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
            output = signers.PdfSigner(
                meta,
                signer=self._pyhanko_signer,  # type: ignore[arg-type]
                timestamper=self._timestamper,  # type: ignore[arg-type]
            ).sign_pdf(writer)
        except Exception as error:
            raise SigningError(f"Signature du PDF impossible : {error}") from error
        return bytes(output.getvalue())


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite length)."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


_ = tsp  # imported for its OID registrations, before any ContentType is built
_DER_INTEGER_1 = b"\x02\x01\x01"
_SHA256_DER = algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
_SHA256_RSA_DER = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}).dump()
_DATA_CONTENT_INFO = cms.EncapsulatedContentInfo({"content_type": "data"}).dump()
_OID_SIGNED_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
_OID_MESSAGE_DIGEST = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()
_OID_TIMESTAMP_TOKEN = core.ObjectIdentifier("1.2.840.113549.1.9.16.2.14").dump()


def _free_field_name(pdf: bytes) -> str:
    number = 1
    while f"/T (Signature{number})".encode() in pdf:
        number += 1
    return f"Signature{number}"


def _pdf_text(text: str) -> str:
    """A PDF text string (UTF-16BE with BOM, hex) — safe for any character."""
    return "<FEFF" + text.encode("utf-16-be").hex().upper() + ">"


_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_TRAILER = re.compile(rb"trailer\s*<<(.*?)>>\s*startxref", re.S)
_REF = rb"(\d+)\s+0\s+R"


@dataclass(frozen=True)
class _SimplePdf:
    """The few facts needed to append a signature to a PDF written by reportlab."""

    xref_offset: int
    size: int
    root_num: int
    root_body: bytes
    page_num: int
    page_body: bytes
    info: str | None
    id: str | None

    @classmethod
    def parse(cls, pdf: bytes) -> _SimplePdf | None:
        """None when the PDF is not simple enough (xref streams, forms, several revisions…)."""
        tail = pdf[-64:]
        match = _STARTXREF.search(tail)
        if not match:
            return None
        xref_offset = int(match.group(1))
        if pdf[xref_offset : xref_offset + 4] != b"xref":
            return None
        trailer_match = _TRAILER.search(pdf, xref_offset)
        if not trailer_match:
            return None
        trailer = trailer_match.group(1)
        size = re.search(rb"/Size\s+(\d+)", trailer)
        root = re.search(rb"/Root\s+" + _REF, trailer)
        # /Prev: an earlier revision (or a linearised file's first-page section); /XRefStm:
        # objects listed in a cross-reference stream this parser does not read.
        if (
            not size
            or not root
            or any(key in trailer for key in (b"/Encrypt", b"/Prev", b"/XRefStm"))
        ):
            return None
        info = re.search(rb"/Info\s+(\d+\s+0\s+R)", trailer)
        ident = re.search(rb"/ID\s*(\[[^\]]*\])", trailer)
        offsets = _xref_offsets(pdf, xref_offset)
        if offsets is None:
            return None
        root_num = int(root.group(1))
        root_body = _object_body(pdf, offsets, root_num)
        if root_body is None or b"/AcroForm" in root_body:
            return None
        pages = re.search(rb"/Pages\s+" + _REF, root_body)
        if not pages:
            return None
        pages_body = _object_body(pdf, offsets, int(pages.group(1)))
        kids = re.search(rb"/Kids\s*\[\s*" + _REF, pages_body or b"")
        if not kids:
            return None
        page_num = int(kids.group(1))
        page_body = _object_body(pdf, offsets, page_num)
        if page_body is None or b"/Annots" in page_body or b"/Type /Pages" in page_body:
            return None
        return cls(
            xref_offset=xref_offset,
            size=int(size.group(1)),
            root_num=root_num,
            root_body=root_body,
            page_num=page_num,
            page_body=page_body,
            info=info.group(1).decode() if info else None,
            id=ident.group(1).decode() if ident else None,
        )


def _xref_offsets(pdf: bytes, at: int) -> dict[int, int] | None:
    offsets: dict[int, int] = {}
    position = pdf.index(b"\n", at) + 1
    while True:
        header = re.match(rb"\s*(\d+)\s+(\d+)\s*\r?\n", pdf[position : position + 40])
        if not header:
            break
        first, count = int(header.group(1)), int(header.group(2))
        position += header.end()
        for index in range(count):
            entry = pdf[position : position + 20]
            if entry[17:18] == b"n":
                offsets[first + index] = int(entry[:10])
            position += 20
    return offsets or None


def _object_body(pdf: bytes, offsets: dict[int, int], number: int) -> bytes | None:
    """The dictionary of a stream-less object ("<< … >>"), or None."""
    start = offsets.get(number)
    if start is None:
        return None
    header = re.match(rb"%d\s+0\s+obj\s*" % number, pdf[start : start + 30])
    if not header:
        return None
    end = pdf.find(b"endobj", start)
    body = pdf[start + header.end() : end].strip()
    if not body.startswith(b"<<") or not body.endswith(b">>") or b"stream" in body:
        return None
    return body


# ---------------------------------------------------------------------- verification


@dataclass(frozen=True)
class SignatureCheck:
    """One signature of a PDF, as `postier documents verify` reports it."""

    field_name: str
    signer: str
    signing_time: datetime | None
    intact: bool
    trusted: bool
    covers_whole_document: bool
    timestamped: bool
    problems: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.intact and self.trusted


@dataclass(frozen=True)
class VerificationResult:
    source: str
    signatures: tuple[SignatureCheck, ...]
    problems: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """Signed, every signature intact and trusted, the last one covering the whole file."""
        return (
            bool(self.signatures)
            and not self.problems
            and all(check.valid for check in self.signatures)
            and self.signatures[-1].covers_whole_document
        )


def verify_pdf(
    source: str | Path | bytes,
    *,
    trust_roots: Sequence[bytes] | None = None,
) -> VerificationResult:
    """Check every signature of a PDF: integrity, signer, signing time, trust.

    `trust_roots` are DER certificates; without them pyHanko's defaults apply. Nothing is
    fetched from the network (no OCSP/CRL): revocation is soft-fail.
    """
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    if isinstance(source, bytes):
        data, label = source, "<bytes>"
    else:
        data, label = Path(source).read_bytes(), str(source)
    roots: Iterable[asn1_x509.Certificate] | None = (
        None if trust_roots is None else [asn1_x509.Certificate.load(der) for der in trust_roots]
    )
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as error:
        return VerificationResult(label, (), (f"PDF illisible : {error}",))
    checks: list[SignatureCheck] = []
    for signature in embedded:
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        problems: list[str] = []
        try:
            status = validate_pdf_signature(signature, context)
        except Exception as error:
            checks.append(
                SignatureCheck(
                    field_name=str(signature.field_name),
                    signer="?",
                    signing_time=None,
                    intact=False,
                    trusted=False,
                    covers_whole_document=False,
                    timestamped=False,
                    problems=(f"signature illisible : {error}",),
                )
            )
            continue
        if not status.intact:
            problems.append("le document a été modifié après la signature")
        elif not status.valid:
            problems.append("la signature cryptographique est invalide")
        if not status.trusted:
            problems.append("le certificat du signataire n'est pas reconnu")
        timestamp = status.timestamp_validity
        signing_time = timestamp.timestamp if timestamp is not None else status.signer_reported_dt
        checks.append(
            SignatureCheck(
                field_name=str(signature.field_name),
                signer=str(status.signing_cert.subject.human_friendly),
                signing_time=signing_time,
                intact=bool(status.intact and status.valid),
                trusted=bool(status.trusted),
                covers_whole_document=status.coverage is not None
                and status.coverage.name == "ENTIRE_FILE",
                timestamped=timestamp is not None,
                problems=tuple(problems),
            )
        )
    return VerificationResult(label, tuple(checks), () if checks else ("aucune signature",))


__all__ = [
    "FIELD_NAME",
    "SignatureCheck",
    "Signer",
    "SigningConfig",
    "VerificationResult",
    "verify_pdf",
]
