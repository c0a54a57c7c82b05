"""A chunk task whose execution timeout strikes in the middle of a chunk (its work on a thread of
its own, `postier.airflow.fresh_thread`): the task fails with Airflow's timeout, the chunk's
transaction is rolled back, and no thread is left at work — on a real DAG run (`dag.test()`)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice, read_rows
from dag_files import load_dag

PREPARE = "factures_preparer_envoi"
#: How long PostgreSQL takes to record the chunk's outcomes, far past the task's timeout.
SLOW_S = 30


def states(dsn: str) -> dict[str, str]:
    return dict(read_rows(dsn, "SELECT number, send_state FROM invoices"))


def test_a_chunk_task_timed_out_mid_chunk_commits_nothing_and_leaves_no_thread(  # type: ignore[no-untyped-def]
    airflow_db, postier_env: str, owner_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTIER_WORKERS", "1")  # one chunk task (the DAG maps one per slot)
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn)
        insert_invoice(conn, customer, number="SLOW-0")
    with psycopg.connect(owner_dsn) as conn:
        # A real slow statement in the middle of the chunk's transaction.
        conn.execute(
            "CREATE FUNCTION slow_outcome() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_sleep({SLOW_S}); RETURN NEW; END $$; "
            "CREATE TRIGGER slow_outcome BEFORE UPDATE ON run_items "
            "FOR EACH ROW EXECUTE FUNCTION slow_outcome()"
        )
    dag: Any = load_dag(PREPARE)
    chunks = dag.get_task("traiter_paquet")
    chunks.partial_kwargs["execution_timeout"] = timedelta(seconds=3)
    chunks.partial_kwargs["retries"] = 0

    dag_run = dag.test()

    assert dag_run.state == "failed"
    (chunk_task,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "traiter_paquet"]
    assert chunk_task.state == "failed"
    # Failed on its timeout, not after the slow statement it was waiting for.
    assert (chunk_task.end_date - chunk_task.start_date).total_seconds() < SLOW_S
    assert states(postier_env) == {"SLOW-0": "EN_ATTENTE"}
    # The chunk's thread ends as soon as it is back from PostgreSQL, rolling back.
    deadline = time.monotonic() + 2 * SLOW_S
    while any(t.name.startswith("traiter_paquet") for t in threading.enumerate()):
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.2)
    pending = read_rows(postier_env, "SELECT status, count(*) FROM run_items GROUP BY status")
    assert pending == [("a_traiter", 1)]
    assert states(postier_env) == {"SLOW-0": "EN_ATTENTE"}
