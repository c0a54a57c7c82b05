"""Lifecycle statuses (CDAR D22B, 200–214) applied from files with `postier plateforme importer`;
every file is built by `cdar_files`, which validates it against the official CDAR schema."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from cdar_files import cdar

from postier.cli import main

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=PARIS)


def deposited_invoice(conn: psycopg.Connection, number: str) -> int:
    cid = insert_customer(conn, channel="plateforme", siren="732829320")
    invoice_id = insert_invoice(conn, cid, number=number, send_state="ENVOYE")
    conn.execute(
        "INSERT INTO plateforme_flows (invoice_id, tracking_id, file_name, sha256, status, "
        "flow_id, deposited_at, created_by) VALUES (%s, %s, %s, %s, 'deposee', %s, now(), 'x')",
        (invoice_id, f"postier-facture-{invoice_id}", f"{number}.pdf", "0" * 64, f"F-{number}"),
    )
    conn.commit()
    return invoice_id


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def lifecycle(conn: psycopg.Connection, number: str) -> tuple[list[str], tuple]:
    logged = conn.execute(
        "SELECT e.status FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE i.number = %s AND e.kind = 'cycle_de_vie' ORDER BY e.id",
        (number,),
    ).fetchall()
    current = conn.execute(
        "SELECT f.lifecycle_status, f.lifecycle_reason, f.paid_at FROM plateforme_flows f "
        "JOIN invoices i ON i.id = f.invoice_id WHERE i.number = %s",
        (number,),
    ).fetchone()
    conn.commit()
    assert current is not None
    return [r[0] for r in logged], tuple(current)


def test_statuses_200_to_212_are_applied_in_order_and_212_records_the_payment(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    deposited_invoice(conn, "FP-LC-1")
    codes = ["200", "202", "203", "204", "205", "211", "212"]
    files = [
        write(tmp_path, f"{i}.xml", cdar("FP-LC-1", code, T0 + timedelta(hours=i)))
        for i, code in enumerate(codes)
    ]

    assert main(["plateforme", "importer", *map(str, files)]) == 0
    assert main(["plateforme", "importer", *map(str, files)]) == 0  # replayed: nothing twice

    logged, (status, _, paid_at) = lifecycle(conn, "FP-LC-1")
    assert logged == codes
    assert status == "212" and paid_at == T0 + timedelta(hours=6)


def test_an_older_status_arriving_late_never_overwrites_a_newer_one(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    deposited_invoice(conn, "FP-LC-2")
    newer = write(tmp_path, "a.xml", cdar("FP-LC-2", "205", T0 + timedelta(days=1)))
    older = write(tmp_path, "b.xml", cdar("FP-LC-2", "204", T0))

    assert main(["plateforme", "importer", str(newer), str(older)]) == 0

    logged, (status, _, _) = lifecycle(conn, "FP-LC-2")
    assert logged == ["205", "204"] and status == "205"


def test_hostile_invalid_or_unknown_files_are_set_aside_while_the_others_apply(
    postier_env: str,
    conn: psycopg.Connection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deposited_invoice(conn, "FP-LC-3")
    good = write(tmp_path, "bon.xml", cdar("FP-LC-3", "210", T0, "montant contesté"))
    unknown = write(tmp_path, "inconnue.xml", cdar("FA-JAMAIS", "200", T0))
    bomb = write(
        tmp_path,
        "bombe.xml",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r>&b;</r>',
    )
    invalid = write(tmp_path, "invalide.xml", cdar("FP-LC-3", "299", T0))
    not_cdar = write(
        tmp_path,
        "schema.xml",
        cdar("FP-LC-3", "200", T0).replace(b"ram:IssuerAssignedID", b"ram:Inconnu"),
    )

    code = main(["plateforme", "importer", *map(str, [unknown, bomb, invalid, not_cdar, good])])

    assert code == 1
    logged, (status, reason, _) = lifecycle(conn, "FP-LC-3")
    assert logged == ["210"] and status == "210" and reason == "montant contesté"
    out = capsys.readouterr().out
    assert "À traiter : FP-LC-3 : 210 Refusée : montant contesté" in out
    assert "inconnue.xml — statut 200 Déposée pour la facture FA-JAMAIS, inconnue" in out
    assert "bombe.xml — XML refusé : déclaration DOCTYPE/ENTITY interdite" in out
    assert "invalide.xml — facture FP-LC-3 : statut de cycle de vie « 299 » inconnu" in out
    assert "schema.xml — fichier non conforme au schéma officiel CDAR D22B" in out
    set_aside = conn.execute(
        "SELECT report->>'fichier' FROM exchanges WHERE status = 'quarantaine' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in set_aside] == [
        "inconnue.xml",
        "bombe.xml",
        "invalide.xml",
        "schema.xml",
    ]
