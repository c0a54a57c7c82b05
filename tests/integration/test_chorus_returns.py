"""Chorus Pro returns reconciled against a real PostgreSQL, from a local folder laid out like the
Chorus SFTP (`out/`, `out/processed/`, `out/quarantine/`)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from chorus_return_files import (
    BUYER,
    ErrorLine,
    flow_file,
    invoice_file,
    pax_record,
    pax_tar_gz,
    tar_gz,
)

from postier.domain.selection import PARIS, Selection
from postier.errors import DeliveryError
from postier.pipeline.chorus_returns import LocalReturnSource, reconcile
from postier.pipeline.context import Environment
from postier.store.selection import select_ids

FLOW = "FSO1117A_POSTIE_AIFE011117000000000000001"
DEPOSITED = datetime(2026, 11, 2, 18, 0, tzinfo=PARIS)


def invoice_xml(*statuses: tuple[str, str, str], comment: str = "", debtor: str = BUYER) -> bytes:
    """An official `CPPFactureStatuts` return, validated against the XSD; each status is
    (invoice number, code, `Horodatage`)."""
    return invoice_file(*statuses, comment=comment, debtor=debtor)


def flow_xml(flow: str, code: str, at: str, errors: list[tuple[str, str, str | None]]) -> bytes:
    """An official `CPPFluxStatuts` return; each error line is (code, label, IdLigne)."""
    return flow_file(
        flow, code, at, tuple(ErrorLine(c, label, line_id=n) for c, label, n in errors)
    )


def evil_tar() -> bytes:
    return tar_gz(
        {"../../../tmp/statut.xml": invoice_xml(("FA-EVIL", "01", "2026-11-03T08:00:00"))}
    )


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><CPPStatut>&b;</CPPStatut>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<CPPStatut><Enveloppe><IdFlx>&e;</IdFlx></Enveloppe></CPPStatut>"
)


@pytest.fixture
def env(db_dsn: str, tmp_path: Path) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home")


@pytest.fixture
def chorus(tmp_path: Path) -> LocalReturnSource:
    (tmp_path / "chorus" / "out").mkdir(parents=True)
    return LocalReturnSource(tmp_path / "chorus")


def drop(source: LocalReturnSource, name: str, data: bytes) -> None:
    (source.root / "out" / name).write_bytes(data)


def folder(source: LocalReturnSource, name: str = "") -> list[str]:
    path = source.root / "out" / name
    return sorted(p.name for p in path.iterdir() if not p.is_dir()) if path.exists() else []


def deposited(conn: psycopg.Connection, count: int, prefix: str, flow: str = FLOW) -> list[str]:
    """Sent invoices of a Chorus customer, deposited in `flow`."""
    customer = insert_customer(conn, channel="chorus", siret=BUYER, code=f"CH-{prefix}")
    numbers = [f"{prefix}-{i:02d}" for i in range(1, count + 1)]
    for number in numbers:
        insert_invoice(conn, customer, number=number, send_state="ENVOYE")
    conn.execute(
        "UPDATE invoices SET chorus_flow_name = %s, chorus_deposited_at = %s, "
        "dematerialized = true, dematerialized_channel = 'chorus' WHERE number = ANY(%s)",
        (flow, DEPOSITED, numbers),
    )
    conn.commit()
    return numbers


def chorus_state(conn: psycopg.Connection) -> dict[str, tuple[str | None, datetime | None]]:
    rows = conn.execute(
        "SELECT number, chorus_status, chorus_deposited_at FROM invoices ORDER BY number"
    ).fetchall()
    return {n: (s, d) for n, s, d in rows}


def exchanges(conn: psycopg.Connection) -> list[tuple[str, str, str, dict[str, Any]]]:
    return conn.execute(
        "SELECT i.number, e.partner, e.status, e.report FROM exchanges e "
        "JOIN invoices i ON i.id = e.invoice_id WHERE e.kind = 'retour_chorus' ORDER BY e.id"
    ).fetchall()


def report_of(summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    md = Path(summary["rapport"])
    return json.loads(md.with_suffix(".json").read_text()), md.read_text()


def test_every_invoice_status_is_logged_and_applied(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    numbers = deposited(conn, 12, "ST")
    codes = [f"{n:02d}" for n in range(1, 13)]
    for number, code in zip(numbers, codes, strict=True):
        drop(chorus, f"FEN1200A_AIFE01_{code}", invoice_xml((number, code, "2026-11-05T09:00:00")))

    summary = reconcile(env, chorus, actor="traitement-nocturne")

    state = chorus_state(conn)
    assert {n: state[n][0] for n in numbers} == dict(zip(numbers, codes, strict=True))
    # Rejected (04, 05): to be corrected and deposited again; the others stay deposited.
    assert [n for n in numbers if state[n][1] is None] == ["ST-04", "ST-05"]
    # Only a routing-data rejection (04) is deposited again; 05 calls for a credit note.
    again = select_ids(conn, Selection.from_params("factures_chorus_recuperer", {}))
    assert {
        r[0] for r in conn.execute("SELECT number FROM invoices WHERE id = ANY(%s)", (again,))
    } == {"ST-04"}
    rows = exchanges(conn)
    assert len(rows) == 12 and all(partner == "CHORUS" for _, partner, _, _ in rows)
    by_number = {n: (status, report) for n, _, status, report in rows}
    assert by_number["ST-05"][0] == "05"
    assert by_number["ST-05"][1]["rapport"] == (
        "retour du flux EDI : 05 Rejetée par l'ordonnateur pour autre motif"
    )
    assert by_number["ST-12"][1]["libelle"] == "Complétée"
    assert folder(chorus) == [] and len(folder(chorus, "processed")) == 12
    report, md = report_of(summary)
    assert summary["compteurs"] == report["compteurs"]
    assert report["compteurs"]["traites"] == 12 and report["compteurs"]["rejets"] == 2
    assert (
        "motif non précisé par Chorus Pro" in md
        and "| ST-04 | 04 Rejetée par l'ordonnateur pour erreur données acheminement |" in md
    )
    run = conn.execute("SELECT treatment, status FROM runs WHERE id = %s", (summary["execution"],))
    assert run.fetchone() == ("chorus_retours", "terminee")


def test_an_older_status_never_overwrites_a_newer_one(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "OLD")
    drop(chorus, "R1", invoice_xml((number, "07", "2026-11-10T00:00:00")))
    reconcile(env, chorus)
    drop(
        chorus,
        "R2",
        invoice_xml((number, "03", "2026-11-05T00:00:00"), (number, "02", "2026-11-04T00:00:00")),
    )
    summary = reconcile(env, chorus)

    assert chorus_state(conn)[number][0] == "07"
    status_at = conn.execute("SELECT chorus_status_at FROM invoices WHERE number = %s", (number,))
    assert status_at.fetchone() == (datetime(2026, 11, 10, tzinfo=PARIS),)
    late = [r for _, _, code, r in exchanges(conn) if code in ("02", "03")]
    assert len(late) == 2 and not any(r["applique"] for r in late)
    _, md = report_of(summary)
    assert "statut antérieur au statut connu (07 du 10/11/2026 00:00) : non appliqué" in md


def test_same_instant_statuses_follow_the_lifecycle_order(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "SAME")
    at = "2026-11-05T08:00:00"
    drop(chorus, "R1", invoice_xml((number, "03", at), (number, "01", at), (number, "02", at)))
    reconcile(env, chorus)
    assert chorus_state(conn)[number][0] == "03"
    assert [code for _, _, code, _ in exchanges(conn)] == ["01", "02", "03"]


def test_partial_integration_rejects_only_the_invoices_in_error(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    numbers = deposited(conn, 3, "PART")
    errors = [("E042", "Code service obligatoire absent", "PART-02")]
    drop(chorus, "CSO_RETOUR_1", flow_xml(FLOW, "96", "2026-11-03T06:00:00", errors))

    summary = reconcile(env, chorus)

    state = chorus_state(conn)
    assert [state[n][0] for n in numbers] == ["96", "96", "96"]
    assert [state[n][1] is None for n in numbers] == [False, True, False]
    report, md = report_of(summary)
    assert [(r["facture"], r["motif"]) for r in report["rejets"]] == [
        ("PART-02", "E042 Code service obligatoire absent")
    ]
    assert (
        "| PART-02 | 96 Reçu - intégration partielle | E042 Code service obligatoire absent |" in md
    )


def test_a_rejected_flow_makes_all_its_invoices_depositable_again(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    numbers = deposited(conn, 2, "REJ")
    other = deposited(conn, 1, "KEEP", flow="FSO1117A_POSTIE_AIFE011117000000000000002")
    errors = [("E001", "Signature du flux invalide", None)]
    drop(chorus, "CSO_RETOUR_2", flow_xml(FLOW, "93", "2026-11-03T06:00:00", errors))

    summary = reconcile(env, chorus)

    state = chorus_state(conn)
    assert all(state[n] == ("93", None) for n in numbers)
    assert state[other[0]] == (None, DEPOSITED)
    report, _ = report_of(summary)
    assert {r["facture"] for r in report["rejets"]} == set(numbers)
    assert report["rejets"][0]["motif"] == "E001 Signature du flux invalide"


def test_bad_and_hostile_files_go_to_quarantine_and_touch_nothing(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [good, known] = deposited(conn, 2, "Q")
    drop(chorus, "A_GOOD", invoice_xml((good, "03", "2026-11-05T00:00:00")))
    drop(chorus, "B_MALFORMED", b"<CPPStatut><Enveloppe>")
    drop(
        chorus,
        "C_UNKNOWN",
        invoice_xml((known, "07", "2026-11-05T00:00:00"), ("FA-NOPE", "07", "2026-11-05T00:00:00")),
    )
    drop(chorus, "D_BOMB", BOMB)
    drop(chorus, "E_XXE", XXE)
    drop(chorus, "F_TAR", evil_tar())
    drop(
        chorus,
        "G_DEBTOR",
        invoice_xml((known, "07", "2026-11-05T00:00:00"), debtor="99999999900000"),
    )
    drop(chorus, "H_FLOW", flow_xml("FLUX-INCONNU", "95", "2026-11-05T00:00:00", []))
    (chorus.root / "secret").write_text("ne pas lire")
    (chorus.root / "out" / "I_LINK").symlink_to(chorus.root / "secret")

    summary = reconcile(env, chorus)

    state = chorus_state(conn)
    assert state[good][0] == "03" and state[known] == (None, DEPOSITED)
    assert [n for n, _, _, _ in exchanges(conn)] == [good]
    assert folder(chorus) == [] and folder(chorus, "processed") == ["A_GOOD"]
    quarantined = folder(chorus, "quarantine")
    assert quarantined == [
        "B_MALFORMED",
        "C_UNKNOWN",
        "D_BOMB",
        "E_XXE",
        "F_TAR",
        "G_DEBTOR",
        "H_FLOW",
        "I_LINK",
    ]
    assert (chorus.root / "secret").read_text() == "ne pas lire"
    rows = dict(conn.execute("SELECT name, status FROM chorus_return_files").fetchall())
    assert rows.pop("A_GOOD") == "traite" and set(rows.values()) == {"quarantaine"}
    report, md = report_of(summary)
    reasons = {q["fichier"]: q["motif"] for q in report["quarantaine"]}
    assert "XML mal formé" in reasons["B_MALFORMED"]
    assert "facture(s) inconnue(s) : FA-NOPE" in reasons["C_UNKNOWN"]
    assert "DOCTYPE/ENTITY interdite" in reasons["D_BOMB"] and "DOCTYPE" in reasons["E_XXE"]
    assert "qui sort du dossier" in reasons["F_TAR"]
    assert "débiteur 99999999900000 différent du SIRET du client" in reasons["G_DEBTOR"]
    assert "flux déposé(s) inconnu(s) : FLUX-INCONNU" in reasons["H_FLOW"]
    assert "lien symbolique refusé" in reasons["I_LINK"]
    assert all(
        r.endswith("fichier mis en quarantaine, rien n'a été appliqué") for r in reasons.values()
    )
    assert "## Fichiers mis en quarantaine" in md and "| C_UNKNOWN |" in md
    assert summary["compteurs"]["quarantaine"] == 8 and summary["compteurs"]["traites"] == 1


def test_duplicates_are_recorded_and_nothing_is_applied_twice(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "DUP")
    data = invoice_xml((number, "05", "2026-11-05T00:00:00"), comment="Bon de commande absent")
    drop(chorus, "FEN_1", data)
    reconcile(env, chorus)
    # Corrected and deposited again after the rejection.
    conn.execute(
        "UPDATE invoices SET chorus_deposited_at = %s WHERE number = %s",
        (datetime(2026, 11, 6, tzinfo=PARIS), number),
    )
    conn.commit()
    drop(chorus, "FEN_1", data)  # same name again
    drop(chorus, "FEN_1_COPIE", data)  # same content, other name
    summary = reconcile(env, chorus)

    assert len(exchanges(conn)) == 1
    assert chorus_state(conn)[number] == ("05", datetime(2026, 11, 6, tzinfo=PARIS))
    statuses = conn.execute("SELECT name, status FROM chorus_return_files ORDER BY id").fetchall()
    assert statuses == [("FEN_1", "traite"), ("FEN_1", "doublon"), ("FEN_1_COPIE", "doublon")]
    assert folder(chorus, "quarantine") == ["FEN_1", "FEN_1_COPIE"]
    report, _ = report_of(summary)
    reasons = [d["motif"] for d in report["doublons"]]
    assert reasons[0].startswith("doublon (même nom) du fichier « FEN_1 » déjà appliqué le ")
    assert reasons[1].startswith("doublon (même contenu) du fichier « FEN_1 »")
    assert all(r.endswith("rien n'a été appliqué de nouveau") for r in reasons)


class FlakyMove(LocalReturnSource):
    """The server drops the connection once, right after the outcome was committed."""

    failures = 1

    def move(self, name: str, folder: str) -> str:
        if self.failures:
            self.failures -= 1
            raise DeliveryError(f"déplacement du fichier retour Chorus {name} : connexion perdue")
        return super().move(name, folder)


def test_a_failed_move_is_finished_by_the_next_run_without_applying_again(
    conn, env, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "MOVE")
    source = FlakyMove(tmp_path / "flaky")
    (source.root / "out").mkdir(parents=True)
    drop(source, "FEN_M", invoice_xml((number, "10", "2026-11-05T00:00:00")))

    with pytest.raises(DeliveryError, match="non lu\\(s\\) ou non déplacé\\(s\\)"):
        reconcile(env, source)
    assert folder(source) == ["FEN_M"] and chorus_state(conn)[number][0] == "10"
    failed = conn.execute("SELECT status, report FROM runs ORDER BY id DESC").fetchone()
    assert failed is not None and failed[0] == "en_erreur"
    assert "connexion perdue" in failed[1]["non_lus"][0]["motif"]

    summary = reconcile(env, source)

    assert folder(source) == [] and folder(source, "processed") == ["FEN_M"]
    assert len(exchanges(conn)) == 1
    rows = conn.execute("SELECT status, moved_at IS NOT NULL FROM chorus_return_files").fetchall()
    assert rows == [("traite", True)]
    assert summary["compteurs"]["doublons"] == 0


def test_a_late_return_of_an_earlier_deposit_does_not_undo_the_new_one(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "LATE", flow="FSO1117A_POSTIE_AIFE011117000000000000003")
    new_deposit = datetime(2026, 11, 8, tzinfo=PARIS)
    conn.execute(
        "UPDATE invoices SET chorus_deposited_at = %s, chorus_flow_name = %s WHERE number = %s",
        (new_deposit, FLOW, number),
    )
    conn.execute(
        "INSERT INTO chorus_flows (name, sequence, interface, status, file_path, sha256, size, "
        "invoice_count, created_by, deposited_at) VALUES (%s, 3, 'FSO1117A', 'deposee', '/x', "
        "repeat('0', 64), 1, 1, 't', %s) RETURNING id",
        ("FSO1117A_POSTIE_AIFE011117000000000000003", DEPOSITED),
    )
    conn.execute(
        "INSERT INTO chorus_flow_invoices (flow_id, invoice_id, position, file_name) "
        "SELECT f.id, i.id, 1, 'x.pdf' FROM chorus_flows f, invoices i WHERE i.number = %s",
        (number,),
    )
    conn.commit()
    old_flow = flow_xml(
        "FSO1117A_POSTIE_AIFE011117000000000000003", "93", "2026-11-09T00:00:00", []
    )
    drop(chorus, "CSO_OLD", old_flow)
    drop(chorus, "FEN_OLD", invoice_xml((number, "05", "2026-11-07T00:00:00")))

    summary = reconcile(env, chorus)

    assert chorus_state(conn)[number][1] == new_deposit
    notes = [r["note"] for _, _, _, r in exchanges(conn)]
    assert any(n.startswith("flux antérieur : la facture a été déposée de nouveau") for n in notes)
    assert any(n.startswith("rejet antérieur au dernier dépôt du 08/11/2026") for n in notes)
    assert summary["compteurs"]["rejets"] == 0 and summary["compteurs"]["traites"] == 2


def test_returns_are_read_and_set_aside_on_the_real_sftp_server(conn, env, chorus_sftp) -> None:  # type: ignore[no-untyped-def]
    from postier.delivery.chorus_sftp import ChorusSftp

    [number] = deposited(conn, 1, "SFTP")
    out = Path(chorus_sftp.remote_out)
    (out / "FEN1200A_SFTP").write_bytes(invoice_xml((number, "11", "2026-11-20T00:00:00")))
    (out / "FEN1200A_EVIL").write_bytes(evil_tar())

    with ChorusSftp(chorus_sftp) as server:
        summary = reconcile(env, server)

    assert chorus_state(conn)[number][0] == "11"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == []
    assert [p.name for p in (out / "processed").iterdir()] == ["FEN1200A_SFTP"]
    assert [p.name for p in (out / "quarantine").iterdir()] == ["FEN1200A_EVIL"]
    assert (summary["compteurs"]["traites"], summary["compteurs"]["quarantaine"]) == (1, 1)


def test_flow_status_91_is_in_transmission_and_keeps_the_deposit(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    numbers = deposited(conn, 4, "TRANS")
    drop(chorus, "CSO_91", flow_xml(FLOW, "91", "2026-11-03T06:00:00", []))

    summary = reconcile(env, chorus)

    state = chorus_state(conn)
    assert all(state[n] == ("91", DEPOSITED) for n in numbers)
    again = select_ids(conn, Selection.from_params("factures_chorus_recuperer", {}))
    assert again == []  # not eligible for a second deposit
    report, md = report_of(summary)
    assert report["compteurs"]["rejets"] == 0 and report["rejets"] == []
    assert "| TRANS-01 | 91 En cours de transmission |" in md


def test_a_status_for_an_invoice_never_deposited_goes_to_quarantine(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [ours] = deposited(conn, 1, "DEP")
    paper = insert_customer(conn, channel="papier", siret=BUYER, code="PAP")
    insert_invoice(conn, paper, number="PAP-1", send_state="ENVOYE")
    waiting = insert_customer(conn, channel="chorus", siret=BUYER, code="WAIT")
    insert_invoice(conn, waiting, number="WAIT-1", send_state="EN_ATTENTE")
    conn.commit()
    drop(chorus, "R_PAPER", invoice_xml(("PAP-1", "03", "2026-11-05T00:00:00")))
    drop(
        chorus,
        "R_WAITING",
        invoice_xml((ours, "03", "2026-11-05T00:00:00"), ("WAIT-1", "04", "2026-11-05T00:00:00")),
    )

    summary = reconcile(env, chorus)

    assert chorus_state(conn)["PAP-1"] == (None, None)
    assert chorus_state(conn)["WAIT-1"] == (None, None)
    assert chorus_state(conn)[ours] == (None, DEPOSITED)  # the whole file is refused
    assert exchanges(conn) == []
    assert folder(chorus, "quarantine") == ["R_PAPER", "R_WAITING"]
    report, _ = report_of(summary)
    reasons = {q["fichier"]: q["motif"] for q in report["quarantaine"]}
    assert reasons["R_PAPER"].startswith(
        "statut pour une facture jamais déposée sur Chorus Pro par Postier : "
        "PAP-1 (« Envoyé au destinataire », canal papier)"
    )
    assert "WAIT-1 (« En attente », canal chorus)" in reasons["R_WAITING"]


# --- One bad file never blocks the others ---------------------------------------------------------

FAR_FUTURE = "9999-12-31T23:59:59-14:00"


def poison_files(number: str) -> dict[bytes, bytes]:
    """Files that crashed every run and stayed in out/: name (bytes) → content."""
    sparse = pax_record("GNU.sparse.map", "0,x,12") + pax_record("GNU.sparse.size", "12")
    return {
        b"A_SPARSE": pax_tar_gz(sparse, invoice_xml((number, "07", "2026-11-05T00:00:00"))),
        b"B_PAX_800K": pax_tar_gz(b"1" * 800_000),  # CVE-2024-6232: quadratic in tarfile
        b"C_AN_9999": invoice_xml((number, "10", FAR_FUTURE)),
        b"D_NOM_\xff": invoice_xml((number, "10", "2026-11-05T00:00:00")),
    }


def test_poison_files_are_quarantined_and_the_next_file_is_processed(conn, env, chorus) -> None:  # type: ignore[no-untyped-def]
    [number] = deposited(conn, 1, "POISON")
    out = os.fsencode(chorus.root / "out")
    for name, data in poison_files(number).items():
        (Path(os.fsdecode(out + b"/" + name))).write_bytes(data)
    drop(chorus, "Z_GOOD", invoice_xml((number, "03", "2026-11-05T00:00:00")))

    started = time.monotonic()
    summary = reconcile(env, chorus)

    assert time.monotonic() - started < 30
    assert sorted(os.listdir(out)) == [b"processed", b"quarantine"]  # out/ is empty
    assert folder(chorus, "processed") == ["Z_GOOD"]
    assert folder(chorus, "quarantine") == ["A_SPARSE", "B_PAX_800K", "C_AN_9999", "D_NOM_%FF"]
    # The invoice only took the good file's status, and reads back fine.
    row = conn.execute(
        "SELECT chorus_status, chorus_status_at FROM invoices WHERE number = %s", (number,)
    ).fetchone()
    assert row == ("03", datetime(2026, 11, 5, tzinfo=PARIS))
    report, md = report_of(summary)
    reasons = {q["fichier"]: q["motif"] for q in report["quarantaine"]}
    assert "membre « sparse » GNU" in reasons["A_SPARSE"]
    assert "en-tête étendu (pax ou nom long) de 800000 octets" in reasons["B_PAX_800K"]
    assert f"date de statut « {FAR_FUTURE} » hors des dates plausibles" in reasons["C_AN_9999"]
    assert "nom de fichier qui n'est pas de l'UTF-8 valide" in reasons["D_NOM_%FF"]
    assert all(
        r.endswith("fichier mis en quarantaine, rien n'a été appliqué") for r in reasons.values()
    )
    assert "| D_NOM_%FF |" in md
    run = conn.execute("SELECT status FROM runs WHERE id = %s", (summary["execution"],))
    assert run.fetchone() == ("terminee",)


def test_on_sftp_bad_names_huge_files_and_same_name_quarantines_all_remain(  # type: ignore[no-untyped-def]
    conn, env, chorus_sftp
) -> None:
    from postier.delivery.chorus_sftp import ChorusSftp

    [number] = deposited(conn, 1, "SFTPQ")
    out = Path(chorus_sftp.remote_out)
    (Path(os.fsdecode(os.fsencode(out) + b"/FEN_\xff"))).write_bytes(
        invoice_xml((number, "03", "2026-11-05T00:00:00"))
    )
    with (out / "FEN_60MO").open("wb") as huge:
        huge.truncate(60 * 1024 * 1024)  # 60 MB (sparse on disk)
    (out / "FEN_BAD").write_bytes(b"<CPPStatut><Enveloppe>")
    (out / "FEN_OK").write_bytes(invoice_xml((number, "07", "2026-11-06T00:00:00")))

    with ChorusSftp(chorus_sftp) as server:
        first = reconcile(env, server)
    # Chorus writes another bad file of the same name: both must stay as evidence.
    (out / "FEN_BAD").write_bytes(b"<CPPStatut><Enveloppe><EnveloppeUnitaire>")
    with ChorusSftp(chorus_sftp) as server:
        second = reconcile(env, server)

    assert [p.name for p in out.iterdir() if p.is_file()] == []
    assert [p.name for p in (out / "processed").iterdir()] == ["FEN_OK"]
    quarantined = sorted(p.name for p in (out / "quarantine").iterdir())
    assert quarantined == ["FEN_%FF", "FEN_60MO", "FEN_BAD", "FEN_BAD.1"]
    assert (out / "quarantine" / "FEN_BAD").read_bytes() == b"<CPPStatut><Enveloppe>"
    assert (out / "quarantine" / "FEN_60MO").stat().st_size == 60 * 1024 * 1024
    assert chorus_state(conn)[number][0] == "07"
    report, _ = report_of(first)
    reasons = {q["fichier"]: q["motif"] for q in report["quarantaine"]}
    assert reasons["FEN_60MO"].startswith("fichier trop volumineux (62914560 octets, maximum")
    assert "UTF-8" in reasons["FEN_%FF"]
    later, _ = report_of(second)
    assert later["quarantaine"][0]["range_sous"].endswith("quarantine/FEN_BAD.1")


def test_the_demos_simulated_returns_follow_the_schema_and_apply(conn, env, chorus, db_dsn) -> None:  # type: ignore[no-untyped-def]
    from postier.airflow.demo_day import _simulated_returns
    from postier.domain.chorus_returns import schema_errors

    numbers = deposited(conn, 3, "DEMO")
    data = _simulated_returns(db_dsn)
    assert data is not None and schema_errors(data) == []
    drop(chorus, "CPPStatut_demo", data)

    summary = reconcile(env, chorus)

    state = chorus_state(conn)
    # The first rejected for its routing data (04), the second for another reason (05).
    assert [state[n][0] for n in numbers] == ["04", "05", "03"]
    assert summary["compteurs"]["quarantaine"] == 0 and summary["compteurs"]["rejets"] == 2
