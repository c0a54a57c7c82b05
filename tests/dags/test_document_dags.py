"""Real DAG runs of the treatments that produce documents: print, preview, bills, prepare, send."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from pypdf import PdfReader

from postier.documents import verify_pdf

VALID_IBAN = "FR7630006000011234567890189"


def pdf_text(path: str | Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def page_count(path: str | Path) -> int:
    return len(PdfReader(path).pages)


def last_report(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return row[0]


def column(dsn: str, sql: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(sql).fetchall())


def test_print_writes_each_invoice_a_merged_file_and_stamps_the_edit(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"P-{n}", lines=2 + 20 * n)
    assert run_dag("factures_imprimer", {"mode": "imprimer"}).state == "success"
    report = last_report(postier_env)
    assert report["compteurs"]["traitees"] == 3
    merged = next(f for f in report["fichiers"] if f.endswith("impression.pdf"))
    parts = sorted(Path(merged).parent.glob("factures/*.pdf"))
    assert [p.stem for p in parts] == ["P-0", "P-1", "P-2"]
    assert page_count(merged) == sum(page_count(p) for p in parts) >= 4
    assert "P-1" in pdf_text(parts[1]) and "APERÇU" not in pdf_text(merged)
    stamps = column(postier_env, "SELECT number, edited_by FROM invoices")
    assert stamps == {"P-0": "dag_test", "P-1": "dag_test", "P-2": "dag_test"}
    # Printed once: the default criteria ("sans date d'édition") no longer select them.
    assert run_dag("factures_imprimer").state == "success"
    assert last_report(postier_env)["compteurs"]["selectionnees"] == 0


def test_preview_watermarks_and_stamps_nothing(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="AP-1")
    assert run_dag("factures_imprimer", {"mode": "apercu"}).state == "success"
    report = last_report(postier_env)
    merged = next(f for f in report["fichiers"] if f.endswith("apercu.pdf"))
    assert "APERÇU" in pdf_text(merged)
    assert "AP-1" in pdf_text(merged)
    assert column(postier_env, "SELECT number, edited_at FROM invoices") == {"AP-1": None}


def test_bills_are_printed_only_for_lcr_and_promissory_notes(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        drawee = insert_customer(conn, iban=VALID_IBAN, bic="AGRIFRPPXXX")
        insert_invoice(conn, drawee, number="LCR-1", payment_mode="lcr")
        insert_invoice(conn, drawee, number="BOR-1", payment_mode="billet_ordre")
        insert_invoice(conn, drawee, number="VIR-1", payment_mode="virement")
        no_bank = insert_customer(conn, iban=None)
        insert_invoice(conn, no_bank, number="LCR-SANS-RIB", payment_mode="lcr")
    assert run_dag("factures_imprimer_traites").state == "success"
    report = last_report(postier_env)
    assert report["compteurs"]["traitees"] == 2 and report["compteurs"]["refusees"] == 1
    (refused,) = report["anomalies"]
    assert refused["facture"] == "LCR-SANS-RIB" and "IBAN" in refused["motif"].upper()
    text = pdf_text(next(f for f in report["fichiers"] if f.endswith("traites.pdf")))
    assert "LCR-1" in text and "BOR-1" in text
    assert "VIR-1" not in text and "LCR-SANS-RIB" not in text


def test_prepare_moves_valid_invoices_to_ready_and_explains_the_others(
    run_dag, postier_env
) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="OK-PORTAIL")
        insert_invoice(conn, insert_customer(conn, channel="papier", emails=[]), number="OK-PAPIER")
        insert_invoice(conn, insert_customer(conn, emails=[]), number="KO-SANS-MAIL")
        insert_invoice(
            conn, number="KO-SANS-LIGNE", lines=0, total_net=0, total_vat=0, total_gross=0
        )
        chorus = insert_customer(
            conn, channel="chorus", siret=None, chorus_engagement_required=True
        )
        insert_invoice(conn, chorus, number="KO-CHORUS")
    assert run_dag("factures_preparer_envoi").state == "success"
    states = column(postier_env, "SELECT number, send_state FROM invoices")
    assert states["OK-PORTAIL"] == states["OK-PAPIER"] == "PRET"
    assert {states[n] for n in ("KO-SANS-MAIL", "KO-SANS-LIGNE", "KO-CHORUS")} == {"EN_ATTENTE"}
    reasons = {a["facture"]: a["motif"] for a in last_report(postier_env)["anomalies"]}
    assert "pas d'adresse e-mail" in reasons["KO-SANS-MAIL"]
    assert "aucune ligne" in reasons["KO-SANS-LIGNE"]
    assert "SIRET" in reasons["KO-CHORUS"] and "engagement" in reasons["KO-CHORUS"]
    prepared = column(
        postier_env, "SELECT number, fingerprint FROM invoices WHERE send_state='PRET'"
    )
    assert all(len(f) == 64 for f in prepared.values())


@pytest.fixture
def ready_book(postier_env: str) -> dict[str, int]:
    with psycopg.connect(postier_env) as conn:
        return {
            "S-PORTAIL": insert_invoice(conn, number="S-PORTAIL", send_state="PRET"),
            "S-CHORUS": insert_invoice(
                conn, insert_customer(conn, channel="chorus"), number="S-CHORUS", send_state="PRET"
            ),
            "S-PAPIER": insert_invoice(
                conn, insert_customer(conn, channel="papier"), number="S-PAPIER", send_state="PRET"
            ),
        }


def test_send_signs_archives_and_marks_each_channel(run_dag, postier_env, ready_book) -> None:  # type: ignore[no-untyped-def]
    # dag.test() cannot answer the human approval: it is marked approved here; the e2e test
    # answers it through the REST API.
    dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")
    assert dag_run.state == "success"
    with psycopg.connect(postier_env) as conn:
        rows = conn.execute(
            "SELECT i.number, i.send_state, i.sent_by, i.dematerialized_channel, d.location, "
            "d.sha256 FROM invoices i JOIN documents d ON d.invoice_id = i.id"
        ).fetchall()
        kinds = conn.execute(
            "SELECT i.number, array_agg(e.kind ORDER BY e.kind) FROM exchanges e "
            "JOIN invoices i ON i.id = e.invoice_id GROUP BY i.number"
        ).fetchall()
    assert {r[0] for r in rows} == set(ready_book)
    home = Path(last_report(postier_env)["fichiers"][-1]).parents[1]  # <home>/runs/<run>
    trust = (home / "signing" / "demo-ca.der").read_bytes()
    for number, state, sent_by, demat, location, sha in rows:
        assert (state, sent_by) == ("ENVOYE", "dag_test")
        data = Path(location).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert verify_pdf(data, trust_roots=[trust]).valid
        assert number in pdf_text(location)
        assert demat == {"S-PORTAIL": "artis", "S-CHORUS": "chorus", "S-PAPIER": None}[number]
    assert dict(kinds) == {
        "S-PORTAIL": ["archivage_ged", "changement_etat", "mise_a_disposition"],
        "S-CHORUS": ["archivage_ged", "changement_etat", "dematerialisation_chorus"],
        "S-PAPIER": ["archivage_ged", "changement_etat"],
    }


def test_send_with_archiving_off_says_so_and_keeps_no_pdf(run_dag, postier_env, ready_book) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        conn.execute("UPDATE settings SET value = 'false' WHERE key = 'ARCHIVAGE_FACTURES'")
        # Portal dematerialisation needs the archive: off too, or the send is refused.
        conn.execute("UPDATE settings SET value = 'false' WHERE key = 'DEMAT_ARTIS'")
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    with psycopg.connect(postier_env) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        notes = dict(
            conn.execute(
                "SELECT i.number, r.reason FROM run_items r JOIN invoices i ON i.id = r.invoice_id"
            ).fetchall()
        )
    assert all(n.startswith("archivage désactivé : PDF non conservé") for n in notes.values())


def test_invoice_edited_after_preparation_is_not_sent(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EDIT-1")
    assert run_dag("factures_preparer_envoi").state == "success"
    with psycopg.connect(postier_env) as conn:
        conn.execute("UPDATE invoice_lines SET description = 'modifiée en douce'")
    # Its only invoice refused, the send did nothing: the run fails.
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "failed"
    assert column(postier_env, "SELECT number, send_state FROM invoices") == {"EDIT-1": "PRET"}
    (anomaly,) = last_report(postier_env)["anomalies"]
    assert "modifiée depuis sa préparation" in anomaly["motif"]


def test_print_house_export_zips_pdfs_with_an_index_and_drops_it(
    run_dag, postier_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    drop = tmp_path / "routeur"
    monkeypatch.setenv("POSTIER_EXPORT_URL", str(drop))
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, insert_customer(conn, name="Mairie de Tours"), number="X-1", lines=60)
        insert_invoice(conn, number="X-2")
    assert run_dag("factures_exporter_impression").state == "success"
    (archive,) = drop.glob("export-*.zip")
    with zipfile.ZipFile(archive) as z:
        index = list(
            csv.DictReader(io.StringIO(z.read("index.csv").decode("utf-8-sig")), delimiter=";")
        )
        assert sorted(z.namelist()) == ["X-1.pdf", "X-2.pdf", "index.csv"]
        pages = {row["facture"]: int(row["pages"]) for row in index}
        assert pages["X-1"] == len(PdfReader(io.BytesIO(z.read("X-1.pdf"))).pages) > 1
    assert index[0]["nom"] == "Mairie de Tours" and index[0]["code_postal"] == "75002"
    assert column(postier_env, "SELECT number, edited_by FROM invoices") == {
        "X-1": "dag_test",
        "X-2": "dag_test",
    }


def test_nightly_send_takes_only_ready_invoices_created_in_the_window(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timedelta

    from postier.domain.selection import PARIS

    now = datetime.now(PARIS)
    with psycopg.connect(postier_env) as conn:
        conn.execute("UPDATE settings SET value = '10' WHERE key = 'NB_JOURS_AVANT_ENVOI_FACTURES'")
        insert_invoice(
            conn, number="N-RECENT", send_state="PRET", created_at=now - timedelta(days=3)
        )
        insert_invoice(conn, number="N-OLD", send_state="PRET", created_at=now - timedelta(days=40))
        insert_invoice(conn, number="N-WAIT", created_at=now - timedelta(days=1))
    dag_run = run_dag("factures_envoi_nocturne")
    assert dag_run.state == "success"
    assert column(postier_env, "SELECT number, send_state FROM invoices") == {
        "N-RECENT": "ENVOYE",
        "N-OLD": "PRET",
        "N-WAIT": "EN_ATTENTE",
    }
    assert "cree_depuis" in last_report(postier_env)["criteres"]
