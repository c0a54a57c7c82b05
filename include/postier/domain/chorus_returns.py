"""Chorus Pro return files (`CPPStatut`): parsing against the official schema, the status table.

A return file read from the Chorus `out/` folder is one XML document or an archive of them (tar,
gzip or tar.gz, with no extension: recognised by its magic bytes, never by its name). Every XML
document must be valid against the AIFE schema `CPPStatutPivot_V1_19.xsd` (copied in
`schemas/`, from `spec/chorus/`); a document that is not is refused with the schema's message.
The official structure, as the schema's `xs:documentation` describes it:

```xml
<CPPStatut Version="…">
  <Enveloppe><EnveloppeUnitaire>            <!-- one or more -->
    <Parametres>                            <!-- at least DtPrd (production date) and IdFlx -->
      <ParametreIndiv><Code>IdFlx</Code><Valeurparametre>id of this return flow</Valeurparametre>
      </ParametreIndiv> …
    </Parametres>
    <Partenaires><Recepteur><Id/></Recepteur><Emetteur><Id/></Emetteur></Partenaires>
  </EnveloppeUnitaire></Enveloppe>
  <!-- exactly one of: -->
  <CPPFluxStatuts><CPPFluxStatutUnitaire><DonneesStatut>
    <IdStatut>90…96</IdStatut> <ComplementStatut/>? <Commentaire/>?
    <Horodatage>dateTime</Horodatage> <IdFlux>the flow we deposited</IdFlux>
    <Details><LigneErreurDetail IdLigne="…">…</Details>?
  </DonneesStatut></CPPFluxStatutUnitaire>…</CPPFluxStatuts>
  <CPPFactureStatuts><CPPFactureStatutUnitaire>
    <Fournisseur><Identifiant>our SIRET</Identifiant>…</Fournisseur>
    <Debiteur><Identifiant>the buyer's SIRET</Identifiant>…</Debiteur>
    <DonneesStatut><IdStatut>01…12</IdStatut> <ComplementStatut/>? <Commentaire/>?
      <Horodatage>dateTime</Horodatage> <IdFacture>our invoice number</IdFacture>…</DonneesStatut>
  </CPPFactureStatutUnitaire>…</CPPFactureStatuts>
</CPPStatut>
```

`Horodatage` without an offset is Paris time; a date outside [2000-01-01, now + 2 days] is refused
(a status dated year 9999 would be stored, then break every read of its invoice).

Hostile input is refused before or while parsing, never "handled": any DOCTYPE (hence any entity
declaration), more than MAX_FILE_SIZE bytes, archives with more than MAX_MEMBERS members or over
MAX_UNPACKED bytes unpacked, tar extended headers (pax, GNU long names) over
MAX_EXTENDED_HEADER bytes — checked on the raw blocks before `tarfile` reads them, because
Python's `tarfile` parses big pax headers in quadratic time before 3.11.10 (CVE-2024-6232) —,
GNU sparse members, members that are not regular files or whose names are absolute or contain
`..`. Nothing is ever extracted to disk: members are read in memory.
"""

from __future__ import annotations

import functools
import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

from lxml import etree

from postier.domain.limits import MAX_FILE_SIZE
from postier.errors import PostierError, ReturnFileError

PARIS = ZoneInfo("Europe/Paris")

SCHEMA_NAME = "CPPStatutPivot_V1_19.xsd"
SCHEMA_PATH = Path(__file__).with_name("schemas") / SCHEMA_NAME

#: A Chorus return is a few kilobytes per invoice; anything near these limits (and
#: `limits.MAX_FILE_SIZE`) is not a return.
MAX_UNPACKED = 50 * 1024 * 1024
MAX_MEMBERS = 1000
MAX_XML_DEPTH = 32
#: A pax header or GNU long name of a status file is a few hundred bytes.
MAX_EXTENDED_HEADER = 4096
#: Status dates: Chorus Pro did not exist before; a little clock skew is tolerated after now.
EARLIEST_STATUS = datetime(2000, 1, 1, tzinfo=PARIS)
FUTURE_TOLERANCE = timedelta(days=2)


class StatusKind(StrEnum):
    FLUX = "flux"
    FACTURE = "facture"


class Outcome(StrEnum):
    """What a status means for the deposit (read from the XSD's documentation)."""

    #: A step of the lifecycle: recorded, changes nothing to the deposit.
    INFORMATIVE = "informatif"
    #: The deposit reached its end well (flow received by the final recipient, invoice paid).
    SUCCESS = "succes_final"
    #: The deposit failed: the invoice is to be deposited again (its deposit date is cleared).
    REJECTION = "rejet"


class RejectionReason(StrEnum):
    #: Invoice 04: routing data (service code, engagement number, buyer SIRET) is wrong.
    ROUTING = "donnees_acheminement"
    #: Invoice 05: any other reason given by the buyer.
    OTHER = "autre_motif"
    #: Flow 93–95: the flow itself was not received or not transmitted.
    FLOW = "flux"


@dataclass(frozen=True)
class StatusCode:
    code: str
    label: str
    kind: StatusKind
    #: Position in the lifecycle: breaks ties between statuses dated the same instant.
    rank: int
    outcome: Outcome = Outcome.INFORMATIVE
    rejection_reason: RejectionReason | None = None

    @property
    def rejection(self) -> bool:
        """The deposit failed: the invoice must be deposited again."""
        return self.outcome is Outcome.REJECTION

    def __str__(self) -> str:
        return f"{self.code} {self.label}"


_FL, _IN = StatusKind.FLUX, StatusKind.FACTURE
_INFO, _OK, _KO = Outcome.INFORMATIVE, Outcome.SUCCESS, Outcome.REJECTION

#: Flow statuses, labels of the XSD (`CPPFluxStatutUnitaire/DonneesStatut/IdStatut`).
FLOW_STATUSES: dict[str, StatusCode] = {
    s.code: s
    for s in (
        StatusCode("90", "Reçu", _FL, 1),
        # Not an error: the flow is on its way to the recipient.
        StatusCode("91", "En cours de transmission", _FL, 2),
        StatusCode("92", "Reçu destinataire final", _FL, 4, _OK),
        StatusCode("93", "Erreur réception", _FL, 4, _KO, RejectionReason.FLOW),
        StatusCode("94", "Erreur réception destinataire final", _FL, 4, _KO, RejectionReason.FLOW),
        StatusCode(
            "95", "Erreur de transmission au destinataire final", _FL, 4, _KO, RejectionReason.FLOW
        ),
        # Some invoices of the flow were not integrated: those its error lines name (IdLigne).
        StatusCode("96", "Reçu - intégration partielle", _FL, 3),
    )
}

#: Invoice statuses, labels of the XSD (`CPPFactureStatutUnitaire/DonneesStatut/IdStatut`).
INVOICE_STATUSES: dict[str, StatusCode] = {
    s.code: s
    for s in (
        StatusCode("01", "Déposée", _IN, 10),
        StatusCode("02", "En cours d'acheminement vers le destinataire", _IN, 20),
        StatusCode("03", "Mise à disposition du destinataire", _IN, 30),
        StatusCode(
            "04",
            "Rejetée par l'ordonnateur pour erreur données acheminement",
            _IN,
            50,
            _KO,
            RejectionReason.ROUTING,
        ),
        StatusCode(
            "05", "Rejetée par l'ordonnateur pour autre motif", _IN, 50, _KO, RejectionReason.OTHER
        ),
        StatusCode("06", "Suspendue", _IN, 40),
        StatusCode("07", "Service fait", _IN, 60),
        StatusCode("08", "Mandatée / DP validée", _IN, 70),
        StatusCode("09", "Mise à disposition du comptable", _IN, 80),
        StatusCode("10", "Comptabilisée", _IN, 90),
        StatusCode("11", "Mise en paiement", _IN, 100, _OK),
        # Completed by the supplier after a suspension (06): the lifecycle goes on.
        StatusCode("12", "Complétée", _IN, 45),
    )
}

#: Codes 13 to 41 are allowed by the schema's enumeration but not described by it: recorded as
#: information, never taken for a rejection or a success.
UNDOCUMENTED_INVOICE_STATUSES: dict[str, StatusCode] = {
    f"{n:02d}": StatusCode(f"{n:02d}", "statut non décrit par le schéma CPPStatutPivot", _IN, 0)
    for n in range(13, 42)
}

#: Every status, by code: informative, final success or rejection (re-depositable).
STATUS_TABLE: dict[str, StatusCode] = (
    FLOW_STATUSES | INVOICE_STATUSES | UNDOCUMENTED_INVOICE_STATUSES
)


@dataclass(frozen=True)
class FlowError:
    """One `LigneErreurDetail`; `line_id` (`IdLigne`) names the invoice in error, if any."""

    code: str
    label: str
    nature: str = ""
    description: str = ""
    line_id: str | None = None

    def __str__(self) -> str:
        text = f"{self.code} {self.label}".strip()
        return f"{text} ({self.description})" if self.description else text


@dataclass(frozen=True)
class FlowStatus:
    flow_name: str
    status: StatusCode
    at: datetime
    comment: str = ""
    errors: tuple[FlowError, ...] = ()

    @property
    def reason(self) -> str:
        """The flow's own reason: its comment and the error lines that name no invoice."""
        parts = [str(e) for e in self.errors if not e.line_id]
        return " ; ".join(p for p in [self.comment, *parts] if p)

    def invoice_errors(self, number: str) -> list[FlowError]:
        return [e for e in self.errors if e.line_id == number]


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
    """One `CPPStatut` document: the return flow's id (`IdFlx`) and its statuses."""

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
    old = STATUS_TABLE.get(current or "")
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


def printable(name: str) -> str:
    """A file or member name as it can be shown and stored: bytes that are not UTF-8 (kept by
    `surrogateescape`) and control characters become `%XX`."""
    raw = name.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable() and "%" not in text:
        return text[:255]
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x25 else f"%{b:02X}" for b in raw)[:255]


def is_utf8(name: str) -> bool:
    """Whether a listed name (decoded with `surrogateescape`) was valid UTF-8 on the server."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def set_aside_names(name: str, limit: int = 1000) -> Iterator[str]:
    """Names under which a return file may be set aside, first free one wins: its own (made
    printable), then `<name>.1`, `<name>.2`… — evidence already set aside is never replaced."""
    base = printable(name)
    yield base
    for n in range(1, limit):
        yield f"{base}.{n}"


# --- Reading the bytes: archives, then XML ----------------------------------------------------


def parse_return_file(data: bytes, *, now: datetime | None = None) -> list[ReturnDocument]:
    """Every `CPPStatut` document of a return file (plain XML, gzip, tar or tar.gz)."""
    if len(data) > MAX_FILE_SIZE:
        raise ReturnFileError(
            f"fichier trop volumineux ({len(data)} octets, maximum {MAX_FILE_SIZE})"
        )
    if not data.strip():
        raise ReturnFileError("fichier vide")
    return [parse_status_xml(xml, member, now=now) for member, xml in _documents(data)]


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


def check_tar_headers(data: bytes) -> None:
    """Walk the tar's 512-byte header blocks without `tarfile`, refusing what it must not see:
    extended headers (pax `x`/`g`, GNU long names `L`/`K`) over MAX_EXTENDED_HEADER bytes, GNU
    sparse members (type `S` or pax `GNU.sparse.*`), sizes that do not parse."""
    position = 0
    while position + 512 <= len(data):
        block = data[position : position + 512]
        if block == bytes(512):
            return  # end-of-archive marker
        kind = block[156:157]
        size_field = block[124:136]
        digits = size_field.strip(b"\0 ")
        if not re.fullmatch(rb"[0-7]{1,12}", digits):
            raise ReturnFileError("archive tar illisible : taille d'un membre illisible")
        size = int(digits, 8)
        if kind in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED_HEADER:
                raise ReturnFileError(
                    f"archive refusée : en-tête étendu (pax ou nom long) de {size} octets, "
                    f"maximum {MAX_EXTENDED_HEADER} (en-têtes démesurés, CVE-2024-6232)"
                )
            body = data[position + 512 : position + 512 + size]
            if kind in (b"x", b"g") and b"GNU.sparse" in body:
                raise ReturnFileError("archive refusée : membre « sparse » GNU (en-tête pax)")
        elif kind == b"S":
            raise ReturnFileError("archive refusée : membre « sparse » GNU")
        position += 512 + -(-size // 512) * 512


def _tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    check_tar_headers(data)
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
                        f"archive trop volumineuse (membre « {printable(member.name)} » : "
                        f"{member.size} octets) : refusée"
                    )
                stream = archive.extractfile(member)
                if stream is None:
                    raise ReturnFileError(
                        f"membre « {printable(member.name)} » illisible dans l'archive"
                    )
                documents.append((member.name, stream.read()))
    # tarfile raises ValueError (bad pax numbers, sparse maps), not only TarError, on a bad header.
    except (tarfile.TarError, ValueError, OSError, EOFError) as exc:
        raise ReturnFileError(
            f"archive tar illisible ({type(exc).__name__} : {printable(str(exc))[:200]})"
        ) from None
    if not documents:
        raise ReturnFileError("archive vide : aucun fichier de statut")
    yield from documents


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    shown = printable(name)
    if member.issym() or member.islnk():
        raise ReturnFileError(
            f"archive refusée : « {shown} » est un lien ({printable(member.linkname)}), "
            "pas un fichier"
        )
    if member.issparse():
        raise ReturnFileError(f"archive refusée : « {shown} » est un membre « sparse »")
    if not member.isfile():
        raise ReturnFileError(f"archive refusée : « {shown} » n'est pas un fichier ordinaire")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ReturnFileError(f"archive refusée : chemin absolu « {shown} »")
    if ".." in path.parts or ".." in re.split(r"[\\/]", name):
        raise ReturnFileError(f"archive refusée : chemin « {shown} » qui sort du dossier")


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


@functools.cache
def status_schema() -> etree.XMLSchema:
    """The official `CPPStatutPivot_V1_19` schema, compiled once per process."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), parser))


def schema_errors(document: etree._Element | bytes) -> list[str]:
    """Why `document` is not valid against the official schema (empty when it is)."""
    if isinstance(document, bytes):
        document = etree.fromstring(document, etree.XMLParser(**_PARSER_OPTIONS))
    schema = status_schema()
    if schema.validate(document):
        return []
    return [f"ligne {e.line} : {e.message}" for e in schema.error_log]


def safe_xml_root(data: bytes, where: str, error: type[PostierError]) -> etree._Element:
    """The root of an untrusted XML file (a return or a lifecycle file); `error` (French, with
    `where` naming the file) when it declares a DOCTYPE/ENTITY, is malformed or nests too deep."""
    # Refused before parsing: entity declarations are how XML bombs and external entities work,
    # and a status file never needs one. Checked again on the parsed tree for other encodings.
    if _DOCTYPE.search(data) or _DOCTYPE.search(data.replace(b"\x00", b"")):
        raise error(
            f"XML refusé{where} : déclaration DOCTYPE/ENTITY interdite (entités externes ou "
            "expansion d'entités)"
        )
    try:
        root = etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        raise error(f"XML mal formé{where} : {exc.msg}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise error(f"XML refusé{where} : DOCTYPE interdit")
    if _depth(root) > MAX_XML_DEPTH:
        raise error(f"XML refusé{where} : imbrication trop profonde")
    return root


def parse_status_xml(
    data: bytes, member: str = "", *, now: datetime | None = None
) -> ReturnDocument:
    """One `CPPStatut` document; `member` names it in messages when it came from an archive."""
    where = f" (membre « {printable(member)} »)" if member else ""
    root = safe_xml_root(data, where, ReturnFileError)
    if root.tag != "CPPStatut":
        raise ReturnFileError(
            f"XML inattendu{where} : élément racine « {root.tag} », « CPPStatut » attendu"
        )
    errors = schema_errors(root)
    if errors:
        shown = " ; ".join(errors[:3]) + (f" (et {len(errors) - 3} autres)" if errors[3:] else "")
        raise ReturnFileError(
            f"fichier non conforme au schéma officiel {SCHEMA_NAME}{where} : {shown}"
        )
    flow_id = _return_flow_id(root, where)
    flows_block = root.find("CPPFluxStatuts")
    if flows_block is not None:
        return ReturnDocument(
            flow_id,
            flows=tuple(
                _flow_status(u, where, now) for u in flows_block.iterfind("CPPFluxStatutUnitaire")
            ),
        )
    invoices_block = root.find("CPPFactureStatuts")
    assert invoices_block is not None  # the schema requires one of the two blocks
    return ReturnDocument(
        flow_id,
        invoices=tuple(
            _invoice_status(u, where, now)
            for u in invoices_block.iterfind("CPPFactureStatutUnitaire")
        ),
    )


def _return_flow_id(root: etree._Element, where: str) -> str:
    # The schema only requires two parameters; its documentation names DtPrd and IdFlx.
    for parameter in root.iterfind("Enveloppe/EnveloppeUnitaire/Parametres/ParametreIndiv"):
        if _text(parameter, "Code") == "IdFlx" and _text(parameter, "Valeurparametre"):
            return _text(parameter, "Valeurparametre")
    raise ReturnFileError(f"enveloppe sans paramètre « IdFlx » (identifiant du flux retour){where}")


def _flow_status(unit: etree._Element, where: str, now: datetime | None) -> FlowStatus:
    data = unit.find("DonneesStatut")
    assert data is not None
    errors = tuple(
        FlowError(
            code=_text(line, "CodeErreur"),
            label=_text(line, "LibelleErreur"),
            nature=_text(line, "NatureErreur"),
            description=_text(line, "DescriptionErreur"),
            line_id=(line.get("IdLigne") or "").strip() or None,
        )
        for line in data.iterfind("Details/LigneErreurDetail")
    )
    return FlowStatus(
        flow_name=_required(data, "IdFlux", where),
        status=FLOW_STATUSES[_code(data)],
        at=parse_status_date(_text(data, "Horodatage"), where, now=now),
        comment=_comment(data),
        errors=errors,
    )


def _invoice_status(unit: etree._Element, where: str, now: datetime | None) -> InvoiceStatus:
    data = unit.find("DonneesStatut")
    assert data is not None
    return InvoiceStatus(
        invoice_number=_required(data, "IdFacture", where),
        supplier_id=_text(unit, "Fournisseur/Identifiant"),
        debtor_id=_text(unit, "Debiteur/Identifiant"),
        status=STATUS_TABLE[_code(data)],
        at=parse_status_date(_text(data, "Horodatage"), where, now=now),
        comment=_comment(data),
    )


def _code(data: etree._Element) -> str:
    # xs:nonNegativeInteger: "1", "01" and "+001" are the same value; the schema's enumeration
    # already restricted it to a known one.
    return f"{int(_text(data, 'IdStatut')):02d}"


def _comment(data: etree._Element) -> str:
    return " ; ".join(p for p in (_text(data, "Commentaire"), _text(data, "ComplementStatut")) if p)


def parse_status_date(value: str, where: str = "", *, now: datetime | None = None) -> datetime:
    """An `xs:dateTime` (naive: Paris time), inside [EARLIEST_STATUS, now + FUTURE_TOLERANCE]."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=PARIS)
        latest = (now or datetime.now(PARIS)) + FUTURE_TOLERANCE
        in_window = EARLIEST_STATUS <= parsed <= latest
    except (ValueError, OverflowError):
        raise ReturnFileError(f"date de statut « {value} » illisible{where}") from None
    if not in_window:
        raise ReturnFileError(
            f"date de statut « {value} » hors des dates plausibles{where} (du "
            f"{EARLIEST_STATUS:%d/%m/%Y} au {latest.astimezone(PARIS):%d/%m/%Y})"
        )
    return parsed


# --- Small XML accessors (the schema has no namespace) ---------------------------------------


def _text(parent: etree._Element, path: str) -> str:
    return (parent.findtext(path) or "").strip()


def _required(parent: etree._Element, path: str, where: str) -> str:
    value = _text(parent, path)
    if not value:
        raise ReturnFileError(f"élément « {path} » vide dans « {parent.tag} »{where}")
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
