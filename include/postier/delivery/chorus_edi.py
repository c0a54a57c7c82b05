"""Chorus Pro EDI flows: file names and packing (DESIGN.md §6).

A flow deposited in `in/` is named `<interface 8>_<app code 6>_<app code 6><interface code 4>
<sequence 15>`, without extension. Interface `FSO1117A` is the mixed flow (E2) carrying Factur-X
PDFs. One invoice: the flow is the PDF itself; several: one tar.gz, its extension removed.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from postier.errors import ConfigurationError, DeliveryError

#: Mixed flow (E2), Factur-X format.
FACTURX_INTERFACE = "FSO1117A"
MAX_SEQUENCE = 10**15 - 1

_APP_CODE = re.compile(r"[A-Z0-9]{6}")
FLOW_NAME = re.compile(
    r"(?P<interface>[A-Z]{3}\d{4}[A-Z])_(?P<application>[A-Z0-9]{6})_"
    r"(?P<partner>[A-Z0-9]{6})(?P<code>\d{4})(?P<sequence>\d{15})"
)

#: tar members get this fixed date: the same PDFs always pack to the same bytes.
_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z


@dataclass(frozen=True)
class FlowName:
    interface: str
    application: str
    partner: str
    sequence: int

    def __str__(self) -> str:
        return (
            f"{self.interface}_{self.application}_{self.partner}"
            f"{interface_code(self.interface)}{self.sequence:015d}"
        )


def interface_code(interface: str) -> str:
    """The 4 digits of an interface identifier (`FSO1117A` → `1117`)."""
    return interface[3:7]


def flow_name(
    application: str, partner: str, sequence: int, interface: str = FACTURX_INTERFACE
) -> str:
    """The flow's file name; a French `ConfigurationError` when a code is not 6 characters."""
    for label, code in (
        ("CHORUS_CODE_APPLICATION", application),
        ("CHORUS_CODE_PARTENAIRE", partner),
    ):
        if not _APP_CODE.fullmatch(code):
            raise ConfigurationError(
                f"paramètre {label} : 6 lettres majuscules ou chiffres attendus, reçu « {code} »"
            )
    if not 0 < sequence <= MAX_SEQUENCE:
        raise ConfigurationError(f"numéro de séquence Chorus hors limites : {sequence}")
    return str(FlowName(interface, application, partner, sequence))


def parse_flow_name(name: str) -> FlowName:
    match = FLOW_NAME.fullmatch(name)
    if match is None or match["code"] != interface_code(match["interface"]):
        raise DeliveryError(f"nom de flux Chorus invalide : « {name} »")
    return FlowName(
        match["interface"], match["application"], match["partner"], int(match["sequence"])
    )


def pack(documents: Sequence[tuple[str, bytes]]) -> bytes:
    """The flow's content: the PDF itself for one invoice, a tar.gz of the PDFs for several.

    Deterministic (fixed dates, owner and modes, gzip without timestamp), so that the same
    documents always give the same bytes and the same sha256.
    """
    if not documents:
        raise DeliveryError("flux Chorus vide : aucune facture à déposer")
    names = [name for name, _ in documents]
    for name in names:
        _check_member_name(name)
    if len(set(names)) != len(names):
        raise DeliveryError("flux Chorus : deux factures portent le même nom de fichier")
    if len(documents) == 1:
        return documents[0][1]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in documents:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _EPOCH
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def unpack(data: bytes, single_name: str = "facture.pdf") -> list[tuple[str, bytes]]:
    """The PDFs of a flow, in packing order (a single PDF is named `single_name`).

    Refuses anything but plain files with simple names: a flow is also read back on retries.
    """
    if data.startswith(b"%PDF-"):
        return [(single_name, data)]
    if not data.startswith(b"\x1f\x8b"):
        raise DeliveryError("flux Chorus illisible : ni PDF ni tar.gz")
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    raise DeliveryError(f"flux Chorus : entrée « {member.name} » refusée")
                _check_member_name(member.name)
                extracted = tar.extractfile(member)
                assert extracted is not None
                out.append((member.name, extracted.read()))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DeliveryError(f"flux Chorus illisible : {error}") from None
    return out


def _check_member_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 100:
        raise DeliveryError(f"nom de fichier refusé dans un flux Chorus : « {name} »")


def document_name(invoice_number: str) -> str:
    """The PDF's name inside a flow or the ZIP: the invoice number, made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", invoice_number) + ".pdf"
