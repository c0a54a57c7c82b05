"""Chorus Pro return files for the tests, built to the official schema and checked against it.

Every file these builders return has been validated against `CPPStatutPivot_V1_19.xsd` (the copy
the parser uses): a fixture that drifts from the schema fails the test that builds it, so the
parser is never tested against a layout of our own. Hostile archives (pax headers, sparse maps,
odd member names) are built byte by byte where `tarfile` would refuse to write them.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from datetime import datetime

from postier.domain.chorus_returns import PARIS, schema_errors
from postier.domain.chorus_returns import FlowError as ErrorLine
from postier.domain.chorus_status_files import (
    FlowLine,
    InvoiceLine,
    flow_status_file,
    invoice_status_file,
)

__all__ = ["ErrorLine", "FlowLine", "InvoiceLine", "flow_file", "invoice_file", "tar_gz"]

SELLER, BUYER = "73282932000074", "11000201100044"
PRODUCED = datetime(2026, 11, 5, 9, 0, tzinfo=PARIS)


def valid(data: bytes) -> bytes:
    """`data`, after checking that it is valid against the official XSD."""
    errors = schema_errors(data)
    assert not errors, f"fixture not valid against CPPStatutPivot_V1_19.xsd: {errors}"
    return data


def invoice_file(
    *statuses: tuple[str, str, str | datetime],
    comment: str = "",
    debtor: str = BUYER,
    supplier: str = SELLER,
    return_flow: str = "CPPStatut_R1",
    check: bool = True,
) -> bytes:
    """A `CPPFactureStatuts` file; each status is (invoice number, code, `Horodatage`)."""
    data = invoice_status_file(
        [InvoiceLine(n, code, at, debtor, comment=comment) for n, code, at in statuses],
        supplier_siret=supplier,
        supplier_name="Postier SA",
        return_flow=return_flow,
        produced=PRODUCED,
    )
    return valid(data) if check else data


def flow_file(
    flow: str,
    code: str,
    at: str | datetime,
    errors: tuple[ErrorLine, ...] = (),
    *,
    comment: str = "",
    return_flow: str = "CPPStatut_F1",
) -> bytes:
    """A `CPPFluxStatuts` file with one status of the deposited flow `flow`."""
    return valid(
        flow_status_file(
            [FlowLine(flow, code, at, comment=comment, errors=errors)],
            return_flow=return_flow,
            produced=PRODUCED,
        )
    )


def tar_gz(members: dict[str, bytes], kinds: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz of `members` (name → bytes), plus link/device entries of `kinds`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in (kinds or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def _header(name: bytes, size: int, kind: bytes) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_tar_gz(pax: bytes, member: bytes = b"<CPPStatut/>") -> bytes:
    """A tar.gz whose only member is preceded by the raw pax header `pax` (records as written,
    unchecked: the point is to write what `tarfile` would refuse)."""
    raw = (
        _header(b"PaxHeaders/statut.xml", len(pax), b"x")
        + _padded(pax)
        + _header(b"statut.xml", len(member), b"0")
        + _padded(member)
        + bytes(1024)
    )
    return gzip.compress(raw)


def pax_record(key: str, value: str) -> bytes:
    """One pax record, `<length> <key>=<value>\\n`, its length counting itself."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body
