"""A run's report, once written, is not loaded whole again by the tasks that end the run.

Every chunk task of a run ends with nothing left to process and comes to the report: the first
writes it, the others (and the task that finds it written after a retry) check it is current
and read back its outcome. They read the whole report each time, twice, with its lists of
anomalies and remarks, as long as the run's problems: a task's peak memory grew with the run.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import psycopg
from builders import insert_customer, insert_invoices

from postier.pipeline.context import Environment
from postier.pipeline.reports import JSON_WRITE_CHARS, write_report, written_report
from postier.pipeline.runs import open_run
from postier.storage import RunFolder


def _reported_run(
    dsn: str, home: Path, invoices: int, peak: list[int] | None = None, refused_every: int = 2
) -> tuple[Environment, str, RunFolder]:
    """A prepare run of `invoices` invoices, one in `refused_every` refused with a reason, the
    others processed with a remark, its report written; (environment, external id, folder).
    `peak`: the tracemalloc peak of writing the report appended to it."""
    env = Environment(dsn=dsn, home=home, workers=1)
    external = f"report-memory/{home.name}"
    with psycopg.connect(dsn) as conn:
        customer = insert_customer(conn)
        ids = insert_invoices(conn, [(customer, 1, {}) for _ in range(invoices)])
        run_id, folder = open_run(env, conn, "factures_preparer_envoi", external, {}, "mdupont")
        conn.execute(
            "INSERT INTO run_items (run_id, invoice_id, position, chunk, status, reason) "
            "SELECT %s, i, n, 0, CASE WHEN n %% %s = 0 THEN 'en_erreur' ELSE 'traitee' END, "
            "CASE WHEN n %% %s = 0 THEN 'client sans adresse e-mail : facture non préparée' "
            "ELSE 'facture à 0 € : préparée, à vérifier avant l''envoi' END "
            "FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(i, n)",
            (run_id, refused_every, refused_every, ids),
        )
        conn.commit()
    if peak is not None:
        tracemalloc.start()
    try:
        assert write_report(env, external, [], again=False) is not None
        if peak is not None:
            peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    return env, external, folder


def _checked_again_peak(dsn: str, home: Path, invoices: int) -> tuple[dict, dict, int]:
    """(rapport.json, the outcome read back, tracemalloc peak in bytes of what another task
    ending the run does: `write_report` with `again` false, then `written_report`)."""
    env, external, folder = _reported_run(dsn, home, invoices)
    tracemalloc.start()
    try:
        assert write_report(env, external, [], again=False) is None  # written, current
        outcome = written_report(env, external)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return json.loads(folder.read("rapport.json")), outcome, peak


def test_a_written_report_is_checked_without_its_lists(db_dsn: str, tmp_path: Path) -> None:
    small_n, large_n = 1_000, 4_000
    # Modules imported once, before either measure.
    _checked_again_peak(db_dsn, tmp_path / "warm", 10)
    small, small_outcome, small_peak = _checked_again_peak(db_dsn, tmp_path / "a", small_n)
    large, large_outcome, large_peak = _checked_again_peak(db_dsn, tmp_path / "b", large_n)
    # The report lists every problem and remark, and its outcome is read back whole.
    assert (len(small["anomalies"]), len(small["remarques"])) == (small_n // 2, small_n // 2)
    assert (len(large["anomalies"]), len(large["remarques"])) == (large_n // 2, large_n // 2)
    assert large_outcome["compteurs"] == large["compteurs"]
    assert large_outcome["compteurs"]["refusees"] == large_n // 2
    assert large_outcome["rapport"] == large["rapport"]
    assert small_outcome["note"].startswith(f"{small_n} sélectionnée(s)")
    # Loaded whole, twice: 0.8 then 3.0 MB (1,000 and 4,000 invoices listed); without the
    # lists, 16 kB at both.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_rapport_json_keeps_its_layout(db_dsn: str, tmp_path: Path) -> None:
    """Written in pieces (`write_json`), rapport.json is byte for byte what `json.dumps` with
    an indent of 2 and the characters as they are made of it."""
    _, _, folder = _reported_run(db_dsn, tmp_path / "a", 1_500)
    written = folder.read("rapport.json")
    report = json.loads(written)
    assert written == json.dumps(report, ensure_ascii=False, indent=2).encode()
    assert (
        report["remarques"][0]["remarque"] == "facture à 0 € : préparée, à vérifier avant l'envoi"
    )
    assert len(written) > 2 * JSON_WRITE_CHARS  # written in several pieces


def test_the_report_is_written_without_holding_its_lists(db_dsn: str, tmp_path: Path) -> None:
    """The report's lists of invoices are built in its `runs` row and read back from it into
    the files: the writer's peak does not grow with the remarks (the Markdown shows the first
    50, the anomalies all: a few here), and the row and rapport.json list the same invoices in
    the same order."""
    small_n, large_n, every = 1_000, 4_000, 100
    peaks: list[int] = []
    _reported_run(db_dsn, tmp_path / "warm", 10, [], every)
    _reported_run(db_dsn, tmp_path / "a", small_n, peaks, every)
    env, external, folder = _reported_run(db_dsn, tmp_path / "b", large_n, peaks, every)
    written = json.loads(folder.read("rapport.json"))
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT report FROM runs WHERE external_id = %s", (external,))
        stored = row.fetchone()[0]
    assert stored == written
    assert written["anomalies"][0] == {
        "facture": written["anomalies"][0]["facture"],
        "statut": "refusée",
        "motif": "client sans adresse e-mail : facture non préparée",
    }
    assert list(written["remarques"][0]) == ["facture", "remarque"]
    assert len(written["remarques"]) == large_n - large_n // every
    markdown = folder.read("rapport.md").decode()
    assert markdown.count("client sans adresse e-mail") == large_n // every
    assert f"… et {large_n - large_n // every - 50} autres (rapport.json)" in markdown
    # Lists loaded whole, dumped for the row and the file: 1.1 then 3.9 MB (1,000 and 4,000
    # invoices listed); built in the row and read back a few at a time, 0.8 MB at both.
    small_peak, large_peak = peaks
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_the_report_lists_its_invoices_in_selection_order(db_dsn: str, tmp_path: Path) -> None:
    """In the order of the run's items (`position`), here the reverse of the order they were
    written in: rapport.json, rapport.md and the row alike."""
    env = Environment(dsn=db_dsn, home=tmp_path, workers=1)
    external = "report-memory/order"
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn)
        ids = insert_invoices(conn, [(customer, 1, {}) for _ in range(6)])
        number = dict(conn.execute("SELECT id, number FROM invoices WHERE id = ANY(%s)", (ids,)))
        run_id, folder = open_run(env, conn, "factures_preparer_envoi", external, {}, "mdupont")
        conn.execute(
            "INSERT INTO run_items (run_id, invoice_id, position, chunk, status, reason) "
            "SELECT %s, i, 7 - n, 0, CASE WHEN n %% 2 = 0 THEN 'en_erreur' ELSE 'traitee' END, "
            "'motif ' || n FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(i, n)",
            (run_id, ids),
        )
        conn.commit()
    assert write_report(env, external, [], again=False) is not None
    refused = [number[ids[n - 1]] for n in (6, 4, 2)]
    noted = [number[ids[n - 1]] for n in (5, 3, 1)]
    written = json.loads(folder.read("rapport.json"))
    assert [a["facture"] for a in written["anomalies"]] == refused
    assert [a["motif"] for a in written["anomalies"]] == ["motif 6", "motif 4", "motif 2"]
    assert [r["facture"] for r in written["remarques"]] == noted
    markdown = folder.read("rapport.md").decode()
    assert sorted(refused + noted, key=markdown.index) == [*refused, *noted]
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT report FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None and row[0] == written
