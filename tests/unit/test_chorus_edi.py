"""Chorus EDI flow names and packing (no service)."""

from __future__ import annotations

import io
import tarfile

import pytest

from postier.delivery.chorus_edi import (
    FLOW_NAME,
    document_name,
    flow_name,
    pack,
    parse_flow_name,
    unpack,
)
from postier.errors import ConfigurationError, DeliveryError


def test_flow_name_follows_the_chorus_pattern() -> None:
    name = flow_name("POSTIE", "AIFE01", 42)
    assert name == "FSO1117A_POSTIE_AIFE011117000000000000042"
    assert FLOW_NAME.fullmatch(name)
    assert parse_flow_name(name).sequence == 42


@pytest.mark.parametrize("code", ["POST", "postie", "POSTIER", "POS-IE"])
def test_application_codes_must_be_six_characters(code: str) -> None:
    with pytest.raises(ConfigurationError, match="CHORUS_CODE_APPLICATION"):
        flow_name(code, "AIFE01", 1)


def test_sequence_has_fifteen_digits_at_most() -> None:
    assert flow_name("POSTIE", "AIFE01", 10**15 - 1).endswith("9" * 15)
    with pytest.raises(ConfigurationError):
        flow_name("POSTIE", "AIFE01", 10**15)


def test_one_invoice_is_the_pdf_several_a_deterministic_tar_gz() -> None:
    assert pack([("A.pdf", b"%PDF-1.7 a")]) == b"%PDF-1.7 a"
    docs = [("A.pdf", b"%PDF-1.7 a"), ("B.pdf", b"%PDF-1.7 b")]
    assert pack(docs) == pack(docs)
    assert unpack(pack(docs)) == docs


def test_unpack_refuses_paths_and_links() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.pdf")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DeliveryError, match="refusé"):
        unpack(raw.getvalue())
    with pytest.raises(DeliveryError, match="illisible"):
        unpack(b"not a flow")


def test_document_names_are_safe() -> None:
    assert document_name("FA/2026/001") == "FA_2026_001.pdf"
