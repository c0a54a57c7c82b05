"""A run's report, once written, is not loaded whole again by the tasks that end the run.

Every chunk task of a run ends with nothing left to process and comes to the report: the first
writes it, the others (and the task that finds it written after a retry) check it is current
and read back its outcome. They read the whole report each time, twice, with its lists of
anomalies and remarks, as long as the run's problems: a task's peak memory grew with the run.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import logging
import tracemalloc
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoices
from test_chunk_statements import TracedEnvironment

from postier.pipeline.context import Environment
from postier.pipeline.reports import (
    JSON_WRITE_CHARS,
    MAX_LOGGED_ANOMALIES,
    NothingDoneError,
    publish,
    publish_listed,
    to_markdown,
    write_report,
    written_report,
)
from postier.pipeline.runs import open_run
from postier.storage import RunFolder


def _reported_run(
    dsn: str, home: Path, invoices: int, peak: list[int] | None = None, refused_every: int = 2
) -> tuple[Environment, str, RunFolder]:
    """A prepare run of `invoices` invoices, one in `refused_every` refused with a reason, the
    others processed with a remark, its report written; (environment, external id, folder).
    `peak`: the tracemalloc peak of writing the report appended to it."""
    env, external, folder = _processed_run(dsn, home, invoices, refused_every)
    if peak is not None:
        tracemalloc.start()
    try:
        assert write_report(env, external, [], again=False) is not None
        if peak is not None:
            peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    return env, external, folder


def _processed_run(
    dsn: str, home: Path, invoices: int, refused_every: int
) -> tuple[Environment, str, RunFolder]:
    """`_reported_run`'s run, its report not written yet."""
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


def _refused_run(
    dsn: str, home: Path, invoices: int, caplog: pytest.LogCaptureFixture
) -> tuple[RunFolder, int, str]:
    """A prepare run of `invoices` invoices, every one refused with a reason, its report
    written (the run fails: nothing done); (folder, tracemalloc peak of writing the report in
    bytes, the task log's report line)."""
    env, external, folder = _processed_run(dsn, home, invoices, refused_every=1)
    caplog.clear()
    tracemalloc.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger="postier.pipeline.reports"),
            pytest.raises(NothingDoneError),
        ):
            write_report(env, external, [], again=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    logged = [r.getMessage() for r in caplog.records if "# Rapport" in r.getMessage()]
    assert len(logged) == 1, logged
    return folder, peak, logged[0]


def test_a_run_refusing_every_invoice_writes_and_logs_its_report_without_holding_it(
    db_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """rapport.md lists every refused invoice, read from the run's row a few at a time; the
    task's log shows the first MAX_LOGGED_ANOMALIES and how many more: neither the writer's
    memory nor the log line grows with the refusals."""
    small_n, large_n = 1_000, 4_000
    _refused_run(db_dsn, tmp_path / "warm", 10, caplog)
    _, small_peak, small_log = _refused_run(db_dsn, tmp_path / "a", small_n, caplog)
    folder, large_peak, large_log = _refused_run(db_dsn, tmp_path / "b", large_n, caplog)
    markdown = folder.read("rapport.md").decode()
    assert markdown.count("| client sans adresse e-mail : facture non préparée |") == large_n
    assert "autres (rapport.md)" not in markdown
    assert large_log.count("client sans adresse e-mail") == MAX_LOGGED_ANOMALIES
    assert f"| … et {large_n - MAX_LOGGED_ANOMALIES} autres (rapport.md) |  |  |" in large_log
    # The log is rapport.md with its first anomalies only: the same up to the table's end.
    shown = large_log.index("| … et ")
    assert large_log.lstrip("\n")[: shown - 1] == markdown[: shown - 1]
    assert len(large_log) < len(small_log) + 10, (len(small_log), len(large_log))
    # Held as one text, then logged whole: 0.9 then 3.5 MB (1,000 and 4,000 refused), a log
    # line of 79 then 313 kB; read from the row a few at a time, 0.6 MB and 4.5 kB at both.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_a_report_closes_its_run_in_one_update(db_dsn: str, tmp_path: Path) -> None:
    """The run's row gets its status, counts and report with both lists in one UPDATE (counted
    on the wire: libpq's trace of the writer's connection), and says what rapport.json says."""
    _, external, folder = _processed_run(db_dsn, tmp_path / "home", 3, 2)
    trace = tmp_path / "trace.txt"
    traced = TracedEnvironment(dsn=db_dsn, home=tmp_path / "home", workers=1, trace=str(trace))
    assert write_report(traced, external, [], again=False) is not None
    ctypes.CDLL(None).fflush(None)  # libpq writes its trace through a stdio stream
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    updates = [
        f for f in sent if f[0] == "F" and f[2] in ("Parse", "Query") and "UPDATE runs" in f[3]
    ]
    assert len(updates) == 1, updates
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT status, counts, report, finished_at IS NOT NULL FROM runs "
            "WHERE external_id = %s",
            (external,),
        ).fetchone()
    assert row is not None
    status, counts, report, finished = row
    assert (status, finished) == ("terminee", True)
    assert report == json.loads(folder.read("rapport.json"))
    assert counts == report["compteurs"] == {**counts, "traitees": 2, "refusees": 1}
    assert [a["motif"] for a in report["anomalies"]] == [
        "client sans adresse e-mail : facture non préparée"
    ]
    assert len(report["remarques"]) == 2


def test_a_runs_invoices_report_takes_no_markdown_function_it_would_ignore(
    db_dsn: str, tmp_path: Path
) -> None:
    """`publish` writes the Markdown it is given, always; the report of a run's invoices has
    its own writer (`publish_listed`), given no Markdown function, and its rapport.md is byte
    for byte what `to_markdown` makes of its rapport.json (every anomaly, the first 50 remarks
    then how many more)."""
    assert "listed" not in inspect.signature(publish).parameters
    assert list(inspect.signature(publish_listed).parameters) == [
        "conn",
        "run_id",
        "folder",
        "report",
        "status",
    ]
    _, _, folder = _reported_run(db_dsn, tmp_path / "a", 90, refused_every=3)
    written = json.loads(folder.read("rapport.json"))
    assert (len(written["anomalies"]), len(written["remarques"])) == (30, 60)
    assert folder.read("rapport.md") == to_markdown(written).encode()
