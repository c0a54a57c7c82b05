"""Chorus Pro return files (`CPPStatut`) parsed without any service: statuses, archives, attacks."""

from __future__ import annotations

import gzip
import io
import tarfile
from datetime import datetime, timedelta

import pytest

from postier.domain.chorus_returns import (
    FLOW_STATUSES,
    INVOICE_STATUSES,
    MAX_FILE_SIZE,
    PARIS,
    parse_return_file,
    parse_status_date,
    supersedes,
)
from postier.errors import ReturnFileError

SELLER, BUYER = "73282932000074", "11000201100044"


def invoice_xml(*statuses: tuple[str, str, str], comment: str = "") -> bytes:
    """A `CPPFactureStatuts` document; each status is (invoice number, code, date)."""
    units = "".join(
        f"<CPPFactureStatutUnitaire><Fournisseur><Identifiant>{SELLER}</Identifiant>"
        f"<RaisonSociale>Postier SA</RaisonSociale></Fournisseur>"
        f"<Debiteur><Identifiant>{BUYER}</Identifiant></Debiteur>"
        f"<DonneesStatut><IdFacture>{n}</IdFacture><IdStatut>{code}</IdStatut>"
        f"<DateStatut>{at}</DateStatut><Commentaire>{comment}</Commentaire></DonneesStatut>"
        f"</CPPFactureStatutUnitaire>"
        for n, code, at in statuses
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><CPPStatut><Enveloppe><IdFlx>RET-1</IdFlx>'
        f"</Enveloppe><CPPFactureStatuts>{units}</CPPFactureStatuts></CPPStatut>"
    ).encode()


def flow_xml(flow: str, code: str, at: str, errors: str = "") -> bytes:
    return (
        "<CPPStatut><Enveloppe><IdFlx>RET-2</IdFlx></Enveloppe><CPPFluxStatuts>"
        f"<CPPFluxStatutUnitaire><IdFlux>{flow}</IdFlux><DonneesStatut><IdStatut>{code}"
        f"</IdStatut><DateStatut>{at}</DateStatut></DonneesStatut>"
        f"<Erreurs>{errors}</Erreurs></CPPFluxStatutUnitaire></CPPFluxStatuts></CPPStatut>"
    ).encode()


def tar_gz(members: dict[str, bytes], kinds: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
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


# --- Statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [f"{n:02d}" for n in range(1, 13)])
def test_every_invoice_status_is_read_with_its_french_label(code: str) -> None:
    [doc] = parse_return_file(invoice_xml(("FA-1", code, "2026-11-03T10:15:00")))
    [status] = doc.invoices
    assert doc.flow_id == "RET-1" and status.invoice_number == "FA-1"
    assert (status.supplier_id, status.debtor_id) == (SELLER, BUYER)
    assert status.status is INVOICE_STATUSES[code]
    assert status.at == datetime(2026, 11, 3, 10, 15, tzinfo=PARIS)
    assert status.status.rejection is (code in ("04", "05"))


def test_the_labels_are_those_of_the_design() -> None:
    labels = {c: s.label for c, s in INVOICE_STATUSES.items()}
    assert labels["01"] == "Déposée" and labels["05"] == "Rejetée"
    assert labels["09"] == "Mise à disposition du comptable" and labels["12"] == "Complétée"
    assert FLOW_STATUSES["90"].label == "Reçu"
    assert FLOW_STATUSES["96"].label == "Reçu intégration partielle"
    assert sorted(FLOW_STATUSES) == [str(n) for n in range(90, 97)]


def test_partial_integration_carries_its_error_lines_per_invoice() -> None:
    errors = (
        "<Erreur><CodeErreur>E42</CodeErreur><LibelleErreur>SIRET destinataire inconnu"
        "</LibelleErreur><IdFacture>FA-2</IdFacture></Erreur>"
    )
    [doc] = parse_return_file(
        flow_xml("FSO1117A_POSTIE_AIFE011117000000000000001", "96", "20261103", errors)
    )
    [flow] = doc.flows
    assert flow.status.code == "96" and flow.at == datetime(2026, 11, 3, tzinfo=PARIS)
    assert [str(e) for e in flow.invoice_errors("FA-2")] == ["E42 SIRET destinataire inconnu"]
    assert flow.invoice_errors("FA-1") == []


def test_namespaces_and_utc_dates_are_accepted() -> None:
    xml = invoice_xml(("FA-1", "03", "2026-11-03T09:00:00Z")).replace(
        b"<CPPStatut>", b'<CPPStatut xmlns="urn:chorus:statut">'
    )
    [doc] = parse_return_file(xml)
    assert doc.invoices[0].at == datetime(2026, 11, 3, 10, 0, tzinfo=PARIS)


def test_a_tar_gz_without_extension_is_recognised_by_its_magic_bytes() -> None:
    data = tar_gz(
        {
            "statuts/a.xml": invoice_xml(("FA-1", "01", "2026-11-03")),
            "statuts/b.xml": flow_xml("FLUX-1", "95", "2026-11-03"),
        }
    )
    docs = parse_return_file(data)
    assert [len(d.invoices) for d in docs] == [1, 0] and docs[1].flows[0].status.code == "95"


def test_a_plain_gzip_is_read_too() -> None:
    [doc] = parse_return_file(gzip.compress(invoice_xml(("FA-9", "07", "2026-11-03"))))
    assert doc.invoices[0].status.label == "Service fait"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-03", datetime(2026, 11, 3, tzinfo=PARIS)),
        ("20261103", datetime(2026, 11, 3, tzinfo=PARIS)),
        ("2026-11-03T10:00:00+01:00", datetime(2026, 11, 3, 10, tzinfo=PARIS)),
    ],
)
def test_status_dates(text: str, expected: datetime) -> None:
    assert parse_status_date(text) == expected


# --- Refusals ---------------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<CPPStatut><Enveloppe><IdFlx>&lol3;</IdFlx></Enveloppe></CPPStatut>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE CPPStatut [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<CPPStatut><Enveloppe><IdFlx>&xxe;</IdFlx></Enveloppe></CPPStatut>"""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BOMB, "DOCTYPE/ENTITY interdite"),
        (XXE, "DOCTYPE/ENTITY interdite"),
        (XXE.decode().replace('"1.0"', '"1.0" encoding="UTF-16"').encode("utf-16"), "interdite"),
        (b"<CPPStatut><Enveloppe>", "XML mal formé"),
        (b"", "fichier vide"),
        (b"<Facture/>", "racine « Facture »"),
        (
            b"<CPPStatut><Enveloppe><IdFlx>R</IdFlx></Enveloppe></CPPStatut>",
            "« CPPFluxStatuts » ou « CPPFactureStatuts »",
        ),
        (invoice_xml(("FA-1", "13", "2026-11-03")), "statut « 13 » inconnu"),
        (flow_xml("F", "05", "2026-11-03"), "statut « 05 » inconnu"),
        (invoice_xml(("", "01", "2026-11-03")), "« IdFacture » manquant"),
        (invoice_xml(("FA-1", "01", "03/11/2026")), "date de statut « 03/11/2026 » illisible"),
        (b"<a>" * 40 + b"</a>" * 40, "imbrication trop profonde"),
    ],
)
def test_bad_or_hostile_xml_is_refused_with_a_french_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ReturnFileError, match=reason):
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


# --- Which status wins --------------------------------------------------------------------------

DAY = datetime(2026, 11, 3, 10, tzinfo=PARIS)
S = INVOICE_STATUSES | FLOW_STATUSES


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
    assert not supersedes(S["95"], DAY + timedelta(hours=1), "01", DAY, deposited)
    # ...but replaces the status left by an earlier, rejected deposit.
    assert supersedes(S["90"], DAY + timedelta(days=2), "05", DAY, DAY + timedelta(days=1))
