"""A chunk task's work runs on a thread of its own (`postier.airflow.fresh_thread`): on the real
Airflow of `conftest.py` (LocalExecutor, real task processes) it still logs to the task's log,
fails the task with its own French error and traceback, reads the connections it needs from
Airflow when it needs them, and a task killed in the middle of a chunk commits nothing of it
and leaves no process behind."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from builders import insert_paper_invoices, read_rows

from postier.documents.samples import sample_identity
from postier.store.cluster import LocalCluster

from .live_airflow import Airflow
from .test_send_through_airflow import (
    CLERK,
    SEND,
    assert_run_succeeded,
    confirm,
    trigger,
    wait_for_run,
)

PREPARE = "factures_preparer_envoi"
CHUNK_TASK = "traiter_paquet"
#: Batch numbers of this module's invoices (the session's Postier database is shared).
LOG_BATCH, FAIL_BATCH, SIGN_BATCH, KILL_BATCH = 7301, 7302, 7303, 7304
#: The French error a PostgreSQL trigger raises for the failing chunk's invoices.
REFUSAL = "facture « {} » refusée par la base : paquet interrompu"


@pytest.fixture
def api(airflow: Airflow) -> Iterator[httpx.Client]:
    with airflow.client(CLERK) as client:
        yield client


@pytest.fixture
def owner_dsn(airflow: Airflow, pg_cluster: LocalCluster) -> str:
    """The Postier database of the Airflow as its owner: triggers, table locks."""
    return pg_cluster.owner_dsn(urlsplit(airflow.postier_dsn).path.lstrip("/"))


@pytest.fixture
def admin(airflow: Airflow) -> Iterator[httpx.Client]:
    with airflow.client("admin") as client:
        yield client


def send_states(dsn: str, numbers: list[str]) -> dict[str, str]:
    query = "SELECT number, send_state FROM invoices WHERE number = ANY(%s)"
    return dict(read_rows(dsn, query, (numbers,)))


def chunk_log(airflow: Airflow, run_id: str, dag_id: str = PREPARE) -> str:
    folder = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    logs = sorted(folder.glob(f"task_id={CHUNK_TASK}/**/*.log"))
    assert logs, f"no chunk task log under {folder}"
    return "\n".join(path.read_text(errors="replace") for path in logs)


def test_the_chunk_work_logs_its_lines_to_the_task_log(airflow: Airflow, api: httpx.Client) -> None:
    numbers = insert_paper_invoices(airflow.postier_dsn, "THREAD", LOG_BATCH, 3, "EN_ATTENTE")
    run_id = trigger(airflow, api, PREPARE, {"lot_debut": LOG_BATCH, "lot_fin": LOG_BATCH})
    assert_run_succeeded(airflow, api, PREPARE, run_id)

    assert send_states(airflow.postier_dsn, numbers) == dict.fromkeys(numbers, "PRET")
    text = chunk_log(airflow, run_id)
    # Both logged by the chunk work's thread, each line with the task's own identifiers.
    assert "Paquet 0 : 3 facture(s) traitée(s)" in text, text[-3000:]
    # One chunk for the run's two chunk tasks (one per slot): one did it, the other nothing.
    assert re.search(r"Part \d/2 : 1 paquet\(s\) traité\(s\), 0 en échec", text), text[-3000:]
    assert_document_cpu_plausible(text)


def assert_document_cpu_plausible(text: str) -> None:
    """Chunk 0's line gives the CPU of its document step: some, and no more than its time."""
    found = re.search(r"Paquet 0 : .* en ([0-9.]+) s, dont documents ([0-9.]+) s de CPU", text)
    assert found, text[-3000:]
    chunk_s, documents_s = float(found.group(1)), float(found.group(2))
    assert 0 < documents_s <= chunk_s, found.group(0)


@pytest.fixture
def refusing_trigger(owner_dsn: str) -> Iterator[str]:
    """A PostgreSQL trigger refusing, in French, to record the outcome of FAIL_BATCH's
    invoices: their chunk raises in the middle of its work."""
    ddl = f"""
        CREATE FUNCTION thread_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE n text;
        BEGIN
            SELECT number INTO n FROM invoices
                WHERE id = NEW.invoice_id AND batch_number = {FAIL_BATCH};
            IF n IS NOT NULL THEN
                RAISE EXCEPTION '%', format('{REFUSAL.format("%s")}', n);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER thread_test_refuse BEFORE UPDATE ON run_items
            FOR EACH ROW EXECUTE FUNCTION thread_test_refuse();
    """
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(ddl)
    try:
        yield "thread_test_refuse"
    finally:
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER thread_test_refuse ON run_items")
            conn.execute("DROP FUNCTION thread_test_refuse()")


def test_a_failing_chunk_fails_its_task_with_its_french_error_and_traceback(
    airflow: Airflow, api: httpx.Client, refusing_trigger: str
) -> None:
    numbers = insert_paper_invoices(airflow.postier_dsn, "THREAD", FAIL_BATCH, 2, "EN_ATTENTE")
    run_id = trigger(airflow, api, PREPARE, {"lot_debut": FAIL_BATCH, "lot_fin": FAIL_BATCH})

    assert wait_for_run(airflow, api, PREPARE, run_id) == "failed"
    assert send_states(airflow.postier_dsn, numbers) == dict.fromkeys(numbers, "EN_ATTENTE")
    text = chunk_log(airflow, run_id)
    refusal = REFUSAL.format(numbers[0])
    # The chunk's own line (from its thread), then the task's failure: the same error, its
    # French message intact, its traceback down to the chunk's code.
    assert "Paquet 0 en échec" in text, text[-4000:]
    assert text.count(refusal) >= 2, text[-4000:]
    assert re.search(r"Part \d/2 : 0 paquet\(s\) traité\(s\), 1 en échec", text), text[-4000:]
    assert "_process_chunk" in text and "record_outcomes" in text, text[-4000:]
    assert "Task failed with exception" in text, text[-4000:]


@pytest.fixture
def signing_connection(admin: httpx.Client) -> Iterator[bytes]:
    """`postier_signing` in Airflow's metadata database, not in the environment: a task reads it
    through its supervisor (the execution API). The certificate it signs with."""
    identity = sample_identity(b"cle-du-metastore", common_name="Cle Metastore")
    body = {
        "connection_id": "postier_signing",
        "conn_type": "generic",
        "password": "cle-du-metastore",
        "extra": json.dumps({"pkcs12_base64": base64.b64encode(identity.pkcs12).decode()}),
    }
    response = admin.post("/connections", json=body)
    assert response.status_code == 201, response.text
    try:
        yield identity.signer_cert_der
    finally:
        admin.delete("/connections/postier_signing")


def documents(dsn: str, numbers: list[str]) -> list[str]:
    rows = read_rows(
        dsn,
        "SELECT d.location FROM documents d JOIN invoices i ON i.id = d.invoice_id "
        "WHERE i.number = ANY(%s) AND d.signed",
        (numbers,),
    )
    return [row[0] for row in rows]


def test_a_connection_read_by_the_chunk_work_comes_from_airflow(
    airflow: Airflow, api: httpx.Client, signing_connection: bytes
) -> None:
    numbers = insert_paper_invoices(airflow.postier_dsn, "THREAD", SIGN_BATCH, 2)
    run_id = trigger(airflow, api, SEND, {"lot_debut": SIGN_BATCH, "lot_fin": SIGN_BATCH})
    confirm(airflow, api, run_id, "Envoyer")
    assert_run_succeeded(airflow, api, SEND, run_id)

    signed = documents(airflow.postier_dsn, numbers)
    assert len(signed) == len(numbers)
    for location in signed:
        # The signature's CMS carries the signer's certificate: the connection's, not the
        # demo key the task falls back to without it.
        assert signing_connection.hex().encode() in Path(location).read_bytes().lower()
    # The renders and signatures' CPU, counted on the chunk work's thread.
    assert_document_cpu_plausible(chunk_log(airflow, run_id, SEND))


def test_a_chunk_task_killed_mid_chunk_commits_nothing_and_its_process_ends(
    airflow: Airflow, api: httpx.Client, admin: httpx.Client, owner_dsn: str
) -> None:
    numbers = insert_paper_invoices(airflow.postier_dsn, "THREAD", KILL_BATCH, 3)
    with psycopg.connect(owner_dsn) as blocker:
        # Held until the task is gone: the chunk waits on it in the middle of its transaction.
        blocker.execute("LOCK TABLE documents IN SHARE MODE")
        run_id = trigger(airflow, api, SEND, {"lot_debut": KILL_BATCH, "lot_fin": KILL_BATCH})
        confirm(airflow, api, run_id, "Envoyer")
        airflow.wait_for("the chunk blocked on the documents", lambda: backend(airflow), 180)
        # The run's two chunk tasks (one per slot): one holds the chunk, the other waits for it
        # (it would take the chunk up once the first is gone).
        tis = [
            api.get(f"/dags/{SEND}/dagRuns/{run_id}/taskInstances/{CHUNK_TASK}/{i}").json()
            for i in range(2)
        ]
        assert all(task_processes(ti["id"]) for ti in tis), "no process for a chunk task"

        # A clerk marks the running tasks failed: Airflow's supervisor sends SIGTERM, then
        # SIGKILL to the task process still at work.
        for ti in tis:
            response = admin.patch(
                f"/dags/{SEND}/dagRuns/{run_id}/taskInstances/{CHUNK_TASK}/{ti['map_index']}",
                json={"new_state": "failed"},
            )
            assert response.status_code == 200, response.text
        airflow.wait_for(
            "the chunk tasks' processes to end",
            lambda: not any(task_processes(ti["id"]) for ti in tis) or None,
            120,
        )
        # Its backend still waits for the lock (PostgreSQL sees its client gone only when it
        # answers): released, it finds no client to commit for.
        blocker.rollback()
    airflow.wait_for("its backend to end", lambda: not backend(airflow, "active") or None, 60)

    assert wait_for_run(airflow, api, SEND, run_id) == "failed"
    assert send_states(airflow.postier_dsn, numbers) == dict.fromkeys(numbers, "PRET")
    pending = read_rows(
        airflow.postier_dsn,
        "SELECT count(*) FROM run_items ri JOIN invoices i ON i.id = ri.invoice_id "
        "WHERE i.number = ANY(%s) AND ri.status = 'a_traiter'",
        (numbers,),
    )
    assert pending == [(len(numbers),)]
    assert documents(airflow.postier_dsn, numbers) == []


def backend(airflow: Airflow, state: str = "") -> bool | None:
    """True while a backend runs the chunk's insert of documents (waiting for a lock, or in
    `state`)."""
    [(count,)] = read_rows(
        airflow.postier_dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'INSERT INTO documents%%' "
        "AND (wait_event_type = 'Lock' OR state = %s)",
        (state,),
    )
    return True if count else None


def task_processes(ti_id: str) -> list[str]:
    """The processes of a task instance: Airflow titles them `airflow worker -- <ti id>`."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"-- {ti_id}" in line]
