"""Chorus Pro return files (`CPPStatut`, official XSD) parsed without any service: statuses,
archives, attacks. Every well-formed fixture is built to the schema and validated against it."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import unicodedata
from datetime import datetime, timedelta

import pytest
from chorus_return_files import (
    BUYER,
    SELLER,
    ErrorLine,
    flow_file,
    invoice_file,
    pax_record,
    pax_tar_gz,
    tar_gz,
)
from lxml import etree

from postier.domain.chorus_returns import (
    FLOW_STATUSES,
    INVOICE_STATUSES,
    MAX_FILE_SIZE,
    PARIS,
    SCHEMA_PATH,
    STATUS_TABLE,
    Outcome,
    RejectionReason,
    parse_return_file,
    parse_status_date,
    schema_errors,
    supersedes,
)
from postier.errors import ReturnFileError

AT = "2026-11-03T10:15:00"
FLOW = "FSO1117A_POSTIE_AIFE011117000000000000001"


# --- The official schema and its statuses -------------------------------------------------------


def test_the_schema_is_the_official_aife_one() -> None:
    schema = etree.parse(str(SCHEMA_PATH))
    names = {e.get("name") for e in schema.iter("{http://www.w3.org/2001/XMLSchema}element")}
    assert {"CPPStatut", "ParametreIndiv", "Horodatage", "IdFlux", "IdFacture"} <= names
    assert "DateStatut" not in names  # the layout of our own making is gone


def _documented(element: str) -> str:
    schema = etree.parse(str(SCHEMA_PATH))
    xs = "{http://www.w3.org/2001/XMLSchema}"
    for unit in schema.iter(f"{xs}element"):
        if unit.get("name") == element:
            return " ".join(d.text or "" for d in unit.iter(f"{xs}documentation"))
    raise AssertionError(element)


def _plain(text: str) -> str:
    """Lower case, no accents, single spaces: the schema writes « reception », « destinaitaire »."""
    text = text.replace("destinaitaire", "destinataire").replace("’", "'").replace(" /", "/")
    text = unicodedata.normalize("NFKD", text.replace("/ ", "/"))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace(" - ", " ")
    return " ".join(text.replace("96:", "96 :").split())


@pytest.mark.parametrize("code", [str(n) for n in range(90, 97)])
def test_flow_labels_are_those_of_the_schema(code: str) -> None:
    documented = _plain(_documented("CPPFluxStatutUnitaire"))
    assert _plain(f"{code} : {FLOW_STATUSES[code].label}") in documented


@pytest.mark.parametrize("code", [f"{n:02d}" for n in range(1, 13)])
def test_invoice_labels_are_those_of_the_schema(code: str) -> None:
    documented = _plain(
        _documented("CPPFactureStatutUnitaire").replace("lordonnateur", "l'ordonnateur")
    )
    assert _plain(f"{code} : {INVOICE_STATUSES[code].label}") in documented.replace("12:", "12 :")


def test_91_is_in_transmission_not_a_rejection() -> None:
    status = FLOW_STATUSES["91"]
    assert status.label == "En cours de transmission"
    assert status.outcome is Outcome.INFORMATIVE and not status.rejection


def test_every_status_is_mapped_to_informative_success_or_rejection() -> None:
    rejections = {c for c, s in STATUS_TABLE.items() if s.outcome is Outcome.REJECTION}
    successes = {c for c, s in STATUS_TABLE.items() if s.outcome is Outcome.SUCCESS}
    assert rejections == {"04", "05", "93", "94", "95"}
    assert successes == {"11", "92"}
    assert STATUS_TABLE["04"].rejection_reason is RejectionReason.ROUTING
    assert STATUS_TABLE["05"].rejection_reason is RejectionReason.OTHER
    assert "acheminement" in STATUS_TABLE["04"].label and "autre motif" in STATUS_TABLE["05"].label
    # 13–41 are allowed by the schema's enumeration, described nowhere: information only.
    assert all(STATUS_TABLE[f"{n}"].outcome is Outcome.INFORMATIVE for n in range(13, 42))


@pytest.mark.parametrize("code", [f"{n:02d}" for n in range(1, 13)])
def test_every_invoice_status_is_read_with_its_french_label(code: str) -> None:
    [doc] = parse_return_file(invoice_file(("FA-1", code, AT)))
    [status] = doc.invoices
    assert doc.flow_id == "CPPStatut_R1" and status.invoice_number == "FA-1"
    assert (status.supplier_id, status.debtor_id) == (SELLER, BUYER)
    assert status.status is INVOICE_STATUSES[code]
    assert status.at == datetime(2026, 11, 3, 10, 15, tzinfo=PARIS)
    assert status.status.rejection is (code in ("04", "05"))


def test_a_flow_status_names_the_deposited_flow_and_its_error_lines() -> None:
    errors = (
        ErrorLine("E42", "SIRET destinataire inconnu", line_id="FA-2"),
        ErrorLine("E01", "Flux incomplet", description="2 factures sur 3"),
    )
    [doc] = parse_return_file(flow_file(FLOW, "96", "2026-11-03T06:00:00Z", errors))
    [flow] = doc.flows
    assert doc.flow_id == "CPPStatut_F1" and flow.flow_name == FLOW
    assert flow.status.code == "96" and flow.at == datetime(2026, 11, 3, 7, tzinfo=PARIS)
    assert [str(e) for e in flow.invoice_errors("FA-2")] == ["E42 SIRET destinataire inconnu"]
    assert flow.reason == "E01 Flux incomplet (2 factures sur 3)"


def test_a_tar_gz_without_extension_is_recognised_by_its_magic_bytes() -> None:
    data = tar_gz(
        {
            "statuts/a.xml": invoice_file(("FA-1", "01", AT)),
            "statuts/b.xml": flow_file(FLOW, "92", AT),
        }
    )
    docs = parse_return_file(data)
    assert [len(d.invoices) for d in docs] == [1, 0] and docs[1].flows[0].status.code == "92"


def test_a_plain_gzip_is_read_too() -> None:
    [doc] = parse_return_file(gzip.compress(invoice_file(("FA-9", "07", AT))))
    assert doc.invoices[0].status.label == "Service fait"


# --- Refusals ---------------------------------------------------------------------------------


def test_the_former_home_made_layout_is_refused_with_the_schema_message() -> None:
    home_made = (
        b"<CPPStatut><Enveloppe><IdFlx>RET-1</IdFlx></Enveloppe><CPPFactureStatuts>"
        b"<CPPFactureStatutUnitaire><Fournisseur><Identifiant>"
        + SELLER.encode()
        + b"</Identifiant>"
        b"</Fournisseur><Debiteur><Identifiant>" + BUYER.encode() + b"</Identifiant></Debiteur>"
        b"<DonneesStatut><IdFacture>FA-1</IdFacture><IdStatut>03</IdStatut>"
        b"<DateStatut>2026-11-03</DateStatut></DonneesStatut></CPPFactureStatutUnitaire>"
        b"</CPPFactureStatuts></CPPStatut>"
    )
    assert schema_errors(home_made)
    with pytest.raises(ReturnFileError) as refused:
        parse_return_file(home_made)
    message = str(refused.value)
    assert message.startswith("fichier non conforme au schéma officiel CPPStatutPivot_V1_19.xsd")
    assert "ligne 1 : Element 'IdFlx': This element is not expected" in message


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<CPPStatut><Enveloppe><IdFlx>&lol3;</IdFlx></Enveloppe></CPPStatut>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE CPPStatut [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<CPPStatut><Enveloppe><IdFlx>&xxe;</IdFlx></Enveloppe></CPPStatut>"""

NO_IDFLX = invoice_file(("FA-1", "01", AT)).replace(b"<Code>IdFlx</Code>", b"<Code>IdXyz</Code>")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BOMB, "DOCTYPE/ENTITY interdite"),
        (XXE, "DOCTYPE/ENTITY interdite"),
        (XXE.decode().replace('"1.0"', '"1.0" encoding="UTF-16"').encode("utf-16"), "interdite"),
        (b"<CPPStatut><Enveloppe>", "XML mal formé"),
        (b"", "fichier vide"),
        (b"<Facture/>", "racine « Facture »"),
        (invoice_file(("FA-1", "42", AT), check=False), "ligne \\d+ : Element 'IdStatut'"),
        (invoice_file(("FA-1", "01", "03/11/2026"), check=False), "'Horodatage'"),
        (invoice_file(("FA-1", "01", AT), debtor="123", check=False), "'Identifiant'"),
        (NO_IDFLX, "sans paramètre « IdFlx »"),
        (b"<a>" * 40 + b"</a>" * 40, "imbrication trop profonde"),
    ],
)
def test_bad_or_hostile_xml_is_refused_with_a_french_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ReturnFileError, match=reason):
        parse_return_file(data)


def test_an_invoice_code_in_a_flow_block_is_refused_by_the_schema() -> None:
    data = flow_file(FLOW, "90", AT).replace(b"<IdStatut>90<", b"<IdStatut>05<")
    with pytest.raises(ReturnFileError, match="non conforme au schéma officiel"):
        parse_return_file(data)


@pytest.mark.parametrize(
    ("members", "kinds", "reason"),
    [
        ({"../../etc/cron.d/x.xml": b"<CPPStatut/>"}, None, "qui sort du dossier"),
        ({"/tmp/x.xml": b"<CPPStatut/>"}, None, "chemin absolu"),
        ({}, {"lien.xml": tarfile.SYMTYPE}, "est un lien"),
        ({}, {"dur.xml": tarfile.LNKTYPE}, "est un lien"),
        ({}, {"fifo": tarfile.FIFOTYPE}, "pas un fichier ordinaire"),
        ({}, None, "archive vide"),
    ],
)
def test_tar_path_tricks_are_refused(
    members: dict[str, bytes], kinds: dict[str, bytes] | None, reason: str
) -> None:
    with pytest.raises(ReturnFileError, match=reason):
        parse_return_file(tar_gz(members, kinds))


def test_oversize_files_and_gzip_bombs_are_refused() -> None:
    with pytest.raises(ReturnFileError, match="trop volumineux"):
        parse_return_file(b" " * (MAX_FILE_SIZE + 1))
    bomb = gzip.compress(b"\0" * (60 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(ReturnFileError, match="trop volumineuse une fois décompressée"):
        parse_return_file(bomb)


# --- Poison archives and dates: refused with a reason, in bounded time --------------------------


@pytest.mark.parametrize(
    "records",
    [
        pax_record("GNU.sparse.map", "0,x,12") + pax_record("GNU.sparse.size", "12"),
        pax_record("GNU.sparse.size", "douze"),
    ],
)
def test_a_pax_header_that_tarfile_cannot_parse_is_refused(records: bytes) -> None:
    with pytest.raises(ReturnFileError, match="archive (refusée|tar illisible)"):
        parse_return_file(pax_tar_gz(records))


def test_a_huge_pax_header_is_refused_in_bounded_time() -> None:
    # 800,000 digits: Python's tarfile before 3.11.10 searches them for « hdrcharset » in
    # quadratic time (40,000 digits already take 4 s; these would take about half an hour).
    header = b"1" * 800_000
    started = time.monotonic()
    with pytest.raises(ReturnFileError, match="en-tête étendu .* CVE-2024-6232"):
        parse_return_file(pax_tar_gz(header))
    assert time.monotonic() - started < 2


def test_non_utf8_member_names_are_shown_escaped() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("statut\udcff.xml")  # byte 0xff, as tarfile decodes it
        info.type = tarfile.SYMTYPE
        archive.addfile(info)
    with pytest.raises(ReturnFileError) as refused:
        parse_return_file(buffer.getvalue())
    assert "« statut%FF.xml » est un lien" in str(refused.value)
    str(refused.value).encode("utf-8")  # storable as is


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9999-12-31T23:59:59-14:00", "hors des dates plausibles"),
        ("1999-12-31T23:59:59+01:00", "hors des dates plausibles"),
        ("2026-11-10T00:00:00", "hors des dates plausibles"),
        ("10000-01-01T00:00:00", "illisible"),
    ],
)
def test_status_dates_outside_a_sane_window_are_refused(text: str, reason: str) -> None:
    now = datetime(2026, 11, 5, 12, tzinfo=PARIS)
    with pytest.raises(ReturnFileError, match=reason):
        parse_status_date(text, now=now)
    data = invoice_file(("FA-1", "03", text), check=text.startswith(("9", "1", "2")))
    with pytest.raises(ReturnFileError):
        parse_return_file(data, now=now)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-03T10:00:00", datetime(2026, 11, 3, 10, tzinfo=PARIS)),
        ("2026-11-03T09:00:00Z", datetime(2026, 11, 3, 10, tzinfo=PARIS)),
        ("2026-11-03T10:00:00+01:00", datetime(2026, 11, 3, 10, tzinfo=PARIS)),
    ],
)
def test_status_dates(text: str, expected: datetime) -> None:
    assert parse_status_date(text) == expected


# --- Which status wins --------------------------------------------------------------------------

DAY = datetime(2026, 11, 3, 10, tzinfo=PARIS)
S = STATUS_TABLE


def test_a_newer_status_wins_and_an_older_one_never_does() -> None:
    assert supersedes(S["07"], DAY + timedelta(days=1), "10", DAY)
    assert not supersedes(S["11"], DAY - timedelta(days=1), "03", DAY)
    assert supersedes(S["01"], DAY, None, None)


def test_at_the_same_instant_the_lifecycle_order_decides() -> None:
    assert supersedes(S["03"], DAY, "02", DAY)
    assert not supersedes(S["02"], DAY, "03", DAY)
    assert supersedes(S["12"], DAY, "06", DAY)  # completed after a suspension


def test_a_flow_status_never_hides_the_invoice_status_of_the_current_deposit() -> None:
    deposited = DAY - timedelta(hours=2)
    assert not supersedes(S["92"], DAY + timedelta(hours=1), "01", DAY, deposited)
    # ...but replaces the status left by an earlier, rejected deposit.
    assert supersedes(S["90"], DAY + timedelta(days=2), "05", DAY, DAY + timedelta(days=1))
