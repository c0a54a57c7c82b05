"""Documents fixtures: a seller and a throwaway signing identity (generated, never stored)."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from pypdf import PdfReader

from postier.documents.samples import SampleIdentity, sample_identity, sample_seller
from postier.documents.signing import Signer, SigningConfig
from postier.domain.models import Seller
from postier.domain.money import format_amount


@pytest.fixture(scope="session")
def seller() -> Seller:
    return sample_seller()


@pytest.fixture(scope="session")
def identity() -> SampleIdentity:
    return sample_identity(b"test-passphrase")


@pytest.fixture(scope="session")
def signer(identity: SampleIdentity) -> Signer:
    return Signer(SigningConfig(identity.pkcs12, identity.passphrase))


def money(amount: Decimal, currency: str | None = "EUR") -> str:
    """`format_amount` as pypdf extracts it: the no-break space before € comes out as a space."""
    return format_amount(amount, currency).replace("\xa0", " ")


def pdf_text(pdf: bytes) -> list[str]:
    """The extracted text of each page."""
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
