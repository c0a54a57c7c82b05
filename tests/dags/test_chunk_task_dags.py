"""Real DAG runs with many small chunks and one task per worker slot: `dag.test()` runs the mapped
tasks one after the other (one slot), so the first does its share then takes up the others' from
the last, out of selection order, and the next ones find nothing. The files still follow the
selection order."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoices
from pypdf import PdfReader

from postier.store import runs as run_store

VALID_IBAN = "FR7630006000011234567890189"
NUMBERS = [f"ORD-{n:03d}" for n in range(9)]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 2 invoices: the 9 invoices make 5 chunks for 4 tasks (POSTIER_WORKERS 4)."""
    monkeypatch.setattr(run_store, "MIN_CHUNK", 2)
    monkeypatch.setattr(run_store, "CHUNK_S", 2 * run_store.INVOICE_S)
    monkeypatch.setenv("POSTIER_WORKERS", "4")


@pytest.fixture
def book(postier_env: str) -> None:
    with psycopg.connect(postier_env) as conn:
        drawee = insert_customer(conn, iban=VALID_IBAN, bic="AGRIFRPPXXX")
        # Numbers inserted in reverse: the selection order is the number's, not the insert's.
        insert_invoices(
            conn, [(drawee, 1, {"number": n, "payment_mode": "lcr"}) for n in reversed(NUMBERS)]
        )


def in_text_order(text: str) -> list[str]:
    """The invoice numbers of NUMBERS in the order they first appear in `text`."""
    seen: list[str] = []
    for number in re.findall(r"ORD-\d{3}", text):
        if number not in seen:
            seen.append(number)
    return seen


def pdf_text(path: str | Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def run_report(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return row[0]


def chunk_order(dsn: str) -> list[int]:
    """The last run's chunks in the order they were done (their items' done_at)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT chunk FROM run_items WHERE run_id = (SELECT max(id) FROM runs) "
            "GROUP BY chunk ORDER BY min(done_at)"
        ).fetchall()
    return [r[0] for r in rows]


def out_of_order(order: list[int]) -> bool:
    """Every chunk done, not in selection order (whichever task `dag.test()` ran first: task
    p does chunk p first, then the others' from the last)."""
    return sorted(order) == [0, 1, 2, 3, 4] and order != sorted(order)


def mapped_tasks(dag_run) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(ti.state for ti in dag_run.get_task_instances() if ti.task_id == "traiter_paquet")


def test_print_bills_and_export_follow_the_selection_with_chunks_done_out_of_order(  # type: ignore[no-untyped-def]
    run_dag, postier_env, book, small_chunks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTIER_EXPORT_URL", str(tmp_path / "routeur"))

    run = run_dag("factures_imprimer_traites")
    assert run.state == "success"
    # 4 tasks for 5 chunks, not 5; the first to run did them all, its share first.
    assert mapped_tasks(run) == ["success"] * 4
    assert out_of_order(chunk_order(postier_env))
    report = run_report(postier_env)
    assert report["compteurs"]["traitees"] == 9
    bills = next(f for f in report["fichiers"] if f.endswith("traites.pdf"))
    assert in_text_order(pdf_text(bills)) == NUMBERS

    run = run_dag("factures_imprimer", {"mode": "imprimer"})
    assert run.state == "success" and out_of_order(chunk_order(postier_env))
    report = run_report(postier_env)
    merged = next(f for f in report["fichiers"] if f.endswith("impression.pdf"))
    assert in_text_order(pdf_text(merged)) == NUMBERS

    # The export selects printed invoices too (its own criteria: edited ones included).
    run = run_dag("factures_exporter_impression", {"sans_date_edition": False})
    assert run.state == "success" and out_of_order(chunk_order(postier_env))
    (archive,) = (tmp_path / "routeur").glob("export-*.zip")
    with zipfile.ZipFile(archive) as z:
        index = csv.DictReader(io.StringIO(z.read("index.csv").decode("utf-8-sig")), delimiter=";")
        assert [row["facture"] for row in index] == NUMBERS
