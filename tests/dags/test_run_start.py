"""No task of its own for the selection: the chunk tasks start their run (the first to get there
selects, the others wait for it), or the confirmation of a send does — once per run, whatever
the tasks that start together, retry or are cleared. On real PostgreSQL and real DAG runs
(`dag.test()`)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from airflow_state import count_publishes, task_states
from builders import insert_invoice, read_rows
from hitl import Clerk

from postier.airflow.dag_factory import SELECTION_LOG
from postier.errors import SelectionError
from postier.pipeline import runs
from postier.pipeline.context import Environment
from postier.pipeline.reports import RefusedAtStartError
from postier.store import database

HOLD = "factures_mettre_en_attente"


def count_starts(monkeypatch: pytest.MonkeyPatch, *, slow_s: float = 0.0) -> list[str]:
    """The run of each selection made from now on (`start_run` called), each taking `slow_s`
    more: long enough for a task starting meanwhile to find the run not yet started."""
    started: list[str] = []
    real_start = runs.start_run

    def start_run(env, treatment_id, params, actor, external_id, today=None):  # type: ignore[no-untyped-def]
        started.append(external_id)
        time.sleep(slow_s)
        return real_start(env, treatment_id, params, actor, external_id, today)

    monkeypatch.setattr(runs, "start_run", start_run)
    return started


def start_together(env: Environment, params: dict[str, Any], ref: str) -> list[Any]:
    """Two chunk tasks of the same run starting it at the same moment, each on its own
    connections (threads: the lock is PostgreSQL's, per connection); what each got."""
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def chunk_task() -> None:
        barrier.wait()
        try:
            runs.ensure_started(env, HOLD, params, "jmartin", ref)
            outcomes.append("started")
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=chunk_task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_two_chunk_tasks_starting_together_select_once(  # type: ignore[no-untyped-def]
    postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"TOG-{n}", send_state="PRET")
    env = Environment(dsn=postier_env, home=database.home())
    starts = count_starts(monkeypatch, slow_s=0.5)

    outcomes = start_together(env, {}, f"{HOLD}/together")

    # The second waited for the first's selection, then found the run started.
    assert outcomes == ["started", "started"]
    assert starts == [f"{HOLD}/together"]
    assert read_rows(postier_env, "SELECT count(*) FROM runs") == [(1,)]
    assert read_rows(postier_env, "SELECT count(*), count(DISTINCT invoice_id) FROM run_items") == [
        (3, 3)
    ]


def test_two_chunk_tasks_of_a_refused_run_both_fail_with_its_reason_recorded_once(  # type: ignore[no-untyped-def]
    postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = Environment(dsn=postier_env, home=database.home())
    starts = count_starts(monkeypatch, slow_s=0.5)
    published = count_publishes(monkeypatch)

    outcomes = start_together(env, {"lot_debut": 9, "lot_fin": 1}, f"{HOLD}/refused")

    assert sorted(type(o).__name__ for o in outcomes) == [
        RefusedAtStartError.__name__,
        SelectionError.__name__,
    ]
    # The same French reason for both: the one the report gives.
    assert len({str(o) for o in outcomes}) == 1
    assert "plage de numéros de lot inversée" in str(outcomes[0])
    assert len(starts) == 1 and len(published) == 1
    assert read_rows(postier_env, "SELECT status FROM runs") == [("criteres_invalides",)]


def test_a_prepare_runs_no_selection_task_and_its_chunk_tasks_select_once(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POSTIER_WORKERS", "2")
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="ONE-1")
    starts = count_starts(monkeypatch)
    with caplog.at_level(logging.INFO, logger="postier.airflow.dag_factory"):
        dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    # One chunk for two chunk tasks: the one that did not select it found nothing, and ended.
    assert task_states(dag_run) == {
        "traiter_paquet[0]": "success",
        "traiter_paquet[1]": "success",
        "rapport": "skipped",
    }
    assert len(starts) == 1
    # The selection's time, logged once (`bench/airflow_bench.py` counts it as serial work).
    selections = [r for r in caplog.records if r.msg == SELECTION_LOG]
    assert len(selections) == 1
    assert read_rows(postier_env, "SELECT status FROM runs") == [("terminee",)]
    assert read_rows(postier_env, "SELECT send_state FROM invoices") == [("PRET",)]


def run_again(run_dag, dsn: str, dag_id: str, prefix: str) -> Any:  # type: ignore[no-untyped-def]
    """The same Airflow run twice (same logical date and run_after: same run id), as a retry or
    a « Clear » of its tasks: invoice `prefix`-1 ready before the first, `prefix`-2 (an invoice
    that now matches the criteria) before the second; the second."""
    with psycopg.connect(dsn) as conn:
        insert_invoice(conn, number=f"{prefix}-1", send_state="PRET")
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert run_dag(dag_id, logical_date=when, run_after=when).state == "success"
    with psycopg.connect(dsn) as conn:
        insert_invoice(conn, number=f"{prefix}-2", send_state="PRET")
    return run_dag(dag_id, logical_date=when, run_after=when)


def test_a_run_run_again_selects_nothing_again(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = count_starts(monkeypatch)

    again = run_again(run_dag, postier_env, HOLD, "AGAIN")

    assert again.state == "success"
    # Not selected again: the run still holds its first selection only.
    assert len(starts) == 1
    assert read_rows(postier_env, "SELECT count(*) FROM run_items") == [(1,)]
    assert read_rows(postier_env, "SELECT number, send_state FROM invoices ORDER BY number") == [
        ("AGAIN-1", "EN_ATTENTE"),
        ("AGAIN-2", "PRET"),
    ]


def test_a_send_selects_in_its_confirmation_once(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="CONF-1", send_state="PRET")
    starts = count_starts(monkeypatch)
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success"
    assert "selectionner" not in task_states(dag_run)
    # The clerk was shown what will be sent, selected by the confirmation itself.
    (asked,) = clerk.asked
    assert "CONF-1" in asked["body"]
    assert len(starts) == 1
    assert read_rows(postier_env, "SELECT send_state FROM invoices") == [("ENVOYE",)]


def test_a_send_run_again_shows_the_same_confirmation_and_selects_nothing_again(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = count_starts(monkeypatch)
    # The confirmation run again (a retry or a « Clear »).
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        again = run_again(run_dag, postier_env, "factures_envoyer", "CONF-AGAIN")

    assert again.state == "success"
    # The clerk was shown the run's selection again, not a new one.
    assert [asked["body"] for asked in clerk.asked] == [clerk.asked[0]["body"]] * 2
    assert "CONF-AGAIN-2" not in clerk.asked[1]["body"]
    assert len(starts) == 1
    assert read_rows(postier_env, "SELECT number, send_state FROM invoices ORDER BY number") == [
        ("CONF-AGAIN-1", "ENVOYE"),
        ("CONF-AGAIN-2", "PRET"),
    ]
