"""Documents fixtures: a seller and a throwaway signing identity (generated, never stored)."""

from __future__ import annotations

import pytest

from postier.documents.samples import SampleIdentity, sample_identity, sample_seller
from postier.documents.signing import Signer, SigningConfig
from postier.domain.models import Seller


@pytest.fixture(scope="session")
def seller() -> Seller:
    return sample_seller()


@pytest.fixture(scope="session")
def identity() -> SampleIdentity:
    return sample_identity(b"test-passphrase")


@pytest.fixture(scope="session")
def signer(identity: SampleIdentity) -> Signer:
    return Signer(SigningConfig(identity.pkcs12, identity.passphrase))
