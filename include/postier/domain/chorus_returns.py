"""Chorus Pro return files (`CPPStatut`): pure parsing into typed statuses, and their ordering.

A return file read from the Chorus `out/` folder is either one XML document or an archive of them
(tar, gzip or tar.gz, with no extension: recognised by its magic bytes, never by its name). Each
XML document is accepted in this shape — element names are matched without namespace, text is
stripped; anything else is refused with a French `ReturnFileError`:

```xml
<CPPStatut>
  <Enveloppe>
    <IdFlx>…</IdFlx>                      <!-- id of this return flow (required) -->
  </Enveloppe>
  <!-- exactly one of the two blocks below -->
  <CPPFluxStatuts>                        <!-- statuses of flows we deposited -->
    <CPPFluxStatutUnitaire>               <!-- one or more -->
      <IdFlux>…</IdFlux>                  <!-- our deposited flow name (required) -->
      <DonneesStatut>
        <IdStatut>90…96</IdStatut>        <!-- required -->
        <DateStatut>…</DateStatut>        <!-- required -->
        <Commentaire>…</Commentaire>      <!-- optional -->
      </DonneesStatut>
      <Erreurs>                           <!-- optional -->
        <Erreur>                          <!-- one per anomaly -->
          <CodeErreur>…</CodeErreur>
          <LibelleErreur>…</LibelleErreur>
          <IdFacture>…</IdFacture>        <!-- optional: the rejected invoice (status 96) -->
        </Erreur>
      </Erreurs>
    </CPPFluxStatutUnitaire>
  </CPPFluxStatuts>
  <CPPFactureStatuts>                     <!-- statuses of invoices -->
    <CPPFactureStatutUnitaire>            <!-- one or more -->
      <Fournisseur><Identifiant>SIRET</Identifiant></Fournisseur>   <!-- us -->
      <Debiteur><Identifiant>SIRET</Identifiant></Debiteur>         <!-- the public buyer -->
      <DonneesStatut>
        <IdFacture>…</IdFacture>          <!-- our invoice number (required) -->
        <IdStatut>01…12</IdStatut>        <!-- required -->
        <DateStatut>…</DateStatut>        <!-- required -->
        <Commentaire>…</Commentaire>      <!-- optional: the reason of a rejection/suspension -->
      </DonneesStatut>
    </CPPFactureStatutUnitaire>
  </CPPFactureStatuts>
</CPPStatut>
```

`DateStatut`: `AAAA-MM-JJ`, `AAAAMMJJ` or an ISO 8601 date-time; without an offset it is Paris
time. The invoice block follows the `CPPStatutPivot` structure (Fournisseur, Debiteur,
DonneesStatut/IdFacture, IdStatut, Commentaire); the flow block is its symmetric counterpart.

Hostile input is refused before or while parsing, never "handled": any DOCTYPE (hence any entity
declaration, internal or external), more than MAX_FILE_SIZE bytes, archives with more than
MAX_MEMBERS members or over MAX_UNPACKED bytes unpacked, members that are not regular files
(symlinks, hard links, devices, folders) or whose names are absolute or contain `..`.
Nothing is ever extracted to disk: members are read in memory.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo

from lxml import etree

from postier.errors import ReturnFileError

PARIS = ZoneInfo("Europe/Paris")

#: A Chorus return is a few kilobytes per invoice; anything near these limits is not a return.
MAX_FILE_SIZE = 10 * 1024 * 1024
MAX_UNPACKED = 50 * 1024 * 1024
MAX_MEMBERS = 1000
MAX_XML_DEPTH = 32


class StatusKind(StrEnum):
    FLUX = "flux"
    FACTURE = "facture"


@dataclass(frozen=True)
class StatusCode:
    code: str
    label: str
    kind: StatusKind
    #: Position in the lifecycle: breaks ties between statuses dated the same instant.
    rank: int
    #: The deposit failed: the invoice must be corrected and deposited again.
    rejection: bool = False

    def __str__(self) -> str:
        return f"{self.code} {self.label}"


_FL, _IN = StatusKind.FLUX, StatusKind.FACTURE

#: Flow statuses (integration report of a deposited flow).
FLOW_STATUSES: dict[str, StatusCode] = {
    s.code: s
    for s in (
        StatusCode("90", "Reçu", _FL, 1),
        StatusCode("91", "Rejeté", _FL, 4, rejection=True),
        StatusCode("92", "En incident (non traité)", _FL, 4, rejection=True),
        StatusCode("93", "En attente de retraitement", _FL, 3),
        StatusCode("94", "En cours de traitement", _FL, 2),
        StatusCode("95", "Intégré", _FL, 4),
        StatusCode("96", "Reçu intégration partielle", _FL, 4),
    )
}

#: Invoice statuses (lifecycle of an invoice once deposited).
INVOICE_STATUSES: dict[str, StatusCode] = {
    s.code: s
    for s in (
        StatusCode("01", "Déposée", _IN, 10),
        StatusCode("02", "En cours d'acheminement", _IN, 20),
        StatusCode("03", "Mise à disposition", _IN, 30),
        StatusCode("04", "Rejetée", _IN, 50, rejection=True),
        StatusCode("05", "Rejetée", _IN, 50, rejection=True),
        StatusCode("06", "Suspendue", _IN, 40),
        StatusCode("07", "Service fait", _IN, 60),
        StatusCode("08", "Mandatée", _IN, 70),
        StatusCode("09", "Mise à disposition du comptable", _IN, 80),
        StatusCode("10", "Comptabilisée", _IN, 90),
        StatusCode("11", "Mise en paiement", _IN, 100),
        StatusCode("12", "Complétée", _IN, 45),
    )
}

STATUSES: dict[str, StatusCode] = FLOW_STATUSES | INVOICE_STATUSES


@dataclass(frozen=True)
class FlowError:
    code: str
    label: str
    invoice_number: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.label}".strip()


@dataclass(frozen=True)
class FlowStatus:
    flow_name: str
    status: StatusCode
    at: datetime
    comment: str = ""
    errors: tuple[FlowError, ...] = ()

    @property
    def reason(self) -> str:
        parts = [str(e) for e in self.errors if e.invoice_number is None]
        return " ; ".join(p for p in [self.comment, *parts] if p)

    def invoice_errors(self, number: str) -> list[FlowError]:
        return [e for e in self.errors if e.invoice_number == number]


@dataclass(frozen=True)
class InvoiceStatus:
    invoice_number: str
    supplier_id: str
    debtor_id: str
    status: StatusCode
    at: datetime
    comment: str = ""


@dataclass(frozen=True)
class ReturnDocument:
    """One `CPPStatut` document: a return flow id and its flow or invoice statuses."""

    flow_id: str
    flows: tuple[FlowStatus, ...] = ()
    invoices: tuple[InvoiceStatus, ...] = ()


def supersedes(
    new: StatusCode,
    new_at: datetime,
    current: str | None,
    current_at: datetime | None,
    deposited_at: datetime | None = None,
) -> bool:
    """Whether `new` replaces the invoice's current Chorus status: never an older one.

    The status date decides; at the same instant, the lifecycle order. A flow status never hides
    an invoice status of the current deposit (that is more precise); it does replace statuses
    left by an earlier, rejected deposit.
    """
    old = STATUSES.get(current or "")
    if old is None or current_at is None:
        return True
    if (
        new.kind is StatusKind.FLUX
        and old.kind is StatusKind.FACTURE
        and (deposited_at is None or current_at >= deposited_at)
    ):
        return False
    if new_at != current_at:
        return new_at > current_at
    return new.rank > old.rank


# --- Reading the bytes: archives, then XML ----------------------------------------------------


def parse_return_file(data: bytes) -> list[ReturnDocument]:
    """Every `CPPStatut` document of a return file (plain XML, gzip, tar or tar.gz)."""
    if len(data) > MAX_FILE_SIZE:
        raise ReturnFileError(
            f"fichier trop volumineux ({len(data)} octets, maximum {MAX_FILE_SIZE})"
        )
    if not data.strip():
        raise ReturnFileError("fichier vide")
    return [parse_status_xml(xml, member) for member, xml in _documents(data)]


def _documents(data: bytes) -> Iterator[tuple[str, bytes]]:
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
        if not data.strip(b"\0 \t\r\n"):
            raise ReturnFileError("archive vide : aucun fichier de statut")
    if _is_tar(data):
        yield from _tar_members(data)
    else:
        yield "", data


def _gunzip(data: bytes) -> bytes:
    # Bounded decompression: a gzip bomb stops at MAX_UNPACKED, never fills the memory.
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1024 * 1024):
                out.write(chunk)
                if out.tell() > MAX_UNPACKED:
                    raise ReturnFileError(
                        f"archive trop volumineuse une fois décompressée (plus de {MAX_UNPACKED} "
                        "octets) : fichier refusé"
                    )
    except (OSError, EOFError, zlib.error) as exc:
        raise ReturnFileError(f"archive gzip illisible ({exc})") from None
    return out.getvalue()


def _is_tar(data: bytes) -> bool:
    return len(data) >= 512 and data[257:262] == b"ustar"


def _tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    total = 0
    documents = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_MEMBERS:
                    raise ReturnFileError(f"archive de plus de {MAX_MEMBERS} fichiers : refusée")
                _check_member(member)
                total += member.size
                if member.size > MAX_FILE_SIZE or total > MAX_UNPACKED:
                    raise ReturnFileError(
                        f"archive trop volumineuse (membre « {member.name} » : {member.size} "
                        "octets) : refusée"
                    )
                stream = archive.extractfile(member)
                if stream is None:
                    raise ReturnFileError(f"membre « {member.name} » illisible dans l'archive")
                documents.append((member.name, stream.read()))
    except tarfile.TarError as exc:
        raise ReturnFileError(f"archive tar illisible ({exc})") from None
    if not documents:
        raise ReturnFileError("archive vide : aucun fichier de statut")
    yield from documents


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if member.issym() or member.islnk():
        raise ReturnFileError(
            f"archive refusée : « {name} » est un lien ({member.linkname}), pas un fichier"
        )
    if not member.isfile():
        raise ReturnFileError(f"archive refusée : « {name} » n'est pas un fichier ordinaire")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ReturnFileError(f"archive refusée : chemin absolu « {name} »")
    if ".." in path.parts or ".." in re.split(r"[\\/]", name):
        raise ReturnFileError(f"archive refusée : chemin « {name} » qui sort du dossier")


_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_status_xml(data: bytes, member: str = "") -> ReturnDocument:
    """One `CPPStatut` document; `member` names it in messages when it came from an archive."""
    where = f" (membre « {member} »)" if member else ""
    # Refused before parsing: entity declarations are how XML bombs and external entities work,
    # and a status file never needs one. Checked again on the parsed tree for other encodings.
    if _DOCTYPE.search(data) or _DOCTYPE.search(data.replace(b"\x00", b"")):
        raise ReturnFileError(
            f"XML refusé{where} : déclaration DOCTYPE/ENTITY interdite (entités externes ou "
            "expansion d'entités)"
        )
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ReturnFileError(f"XML mal formé{where} : {exc.msg}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise ReturnFileError(f"XML refusé{where} : DOCTYPE interdit")
    if _depth(root) > MAX_XML_DEPTH:
        raise ReturnFileError(f"XML refusé{where} : imbrication trop profonde")
    if _local(root) != "CPPStatut":
        raise ReturnFileError(
            f"XML inattendu{where} : élément racine « {_local(root)} », « CPPStatut » attendu"
        )
    flow_id = _text(_child(root, "Enveloppe", where), "IdFlx", where)
    flows_block = _optional(root, "CPPFluxStatuts")
    invoices_block = _optional(root, "CPPFactureStatuts")
    if (flows_block is None) == (invoices_block is None):
        raise ReturnFileError(
            f"XML inattendu{where} : un bloc « CPPFluxStatuts » ou « CPPFactureStatuts » "
            "attendu (un seul)"
        )
    if flows_block is not None:
        units = _children(flows_block, "CPPFluxStatutUnitaire")
        if not units:
            raise ReturnFileError(f"XML inattendu{where} : aucun « CPPFluxStatutUnitaire »")
        return ReturnDocument(flow_id, flows=tuple(_flow_status(u, where) for u in units))
    assert invoices_block is not None
    units = _children(invoices_block, "CPPFactureStatutUnitaire")
    if not units:
        raise ReturnFileError(f"XML inattendu{where} : aucun « CPPFactureStatutUnitaire »")
    return ReturnDocument(flow_id, invoices=tuple(_invoice_status(u, where) for u in units))


def _flow_status(unit: etree._Element, where: str) -> FlowStatus:
    data = _child(unit, "DonneesStatut", where)
    status = _status(_text(data, "IdStatut", where), FLOW_STATUSES, "de flux (90 à 96)", where)
    errors: list[FlowError] = []
    block = _optional(unit, "Erreurs")
    for error in _children(block, "Erreur") if block is not None else []:
        invoice = _optional_text(error, "IdFacture")
        errors.append(
            FlowError(
                _optional_text(error, "CodeErreur") or "",
                _optional_text(error, "LibelleErreur") or "",
                invoice or None,
            )
        )
    return FlowStatus(
        flow_name=_text(unit, "IdFlux", where),
        status=status,
        at=parse_status_date(_text(data, "DateStatut", where), where),
        comment=_optional_text(data, "Commentaire") or "",
        errors=tuple(errors),
    )


def _invoice_status(unit: etree._Element, where: str) -> InvoiceStatus:
    data = _child(unit, "DonneesStatut", where)
    code = _text(data, "IdStatut", where)
    return InvoiceStatus(
        invoice_number=_text(data, "IdFacture", where),
        supplier_id=_text(_child(unit, "Fournisseur", where), "Identifiant", where),
        debtor_id=_text(_child(unit, "Debiteur", where), "Identifiant", where),
        status=_status(code, INVOICE_STATUSES, "de facture (01 à 12)", where),
        at=parse_status_date(_text(data, "DateStatut", where), where),
        comment=_optional_text(data, "Commentaire") or "",
    )


def _status(code: str, known: dict[str, StatusCode], what: str, where: str) -> StatusCode:
    try:
        return known[code]
    except KeyError:
        raise ReturnFileError(f"statut « {code} » inconnu{where} : statut {what} attendu") from None


def parse_status_date(value: str, where: str = "") -> datetime:
    """`AAAA-MM-JJ`, `AAAAMMJJ` or ISO date-time; naive values are Paris time."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{8}", text):
            parsed = datetime.combine(date(int(text[:4]), int(text[4:6]), int(text[6:])), time())
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReturnFileError(f"date de statut « {value} » illisible{where}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=PARIS)


# --- Small XML accessors, namespace-agnostic -------------------------------------------------


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _children(parent: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in parent if _local(c) == name]


def _optional(parent: etree._Element, name: str) -> etree._Element | None:
    found = _children(parent, name)
    return found[0] if found else None


def _child(parent: etree._Element, name: str, where: str) -> etree._Element:
    found = _optional(parent, name)
    if found is None:
        raise ReturnFileError(f"élément « {name} » manquant dans « {_local(parent)} »{where}")
    return found


def _optional_text(parent: etree._Element, name: str) -> str | None:
    found = _optional(parent, name)
    return None if found is None else "".join(found.itertext()).strip()


def _text(parent: etree._Element, name: str, where: str) -> str:
    value = _optional_text(parent, name)
    if not value:
        raise ReturnFileError(
            f"élément « {name} » manquant ou vide dans « {_local(parent)} »{where}"
        )
    return value


def _depth(root: etree._Element) -> int:
    deepest, stack = 0, [(root, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_XML_DEPTH:
            break
        stack.extend((child, depth + 1) for child in node)
    return deepest
