"""Postier on Airflow's CeleryExecutor: two workers as if on two hosts, a real Redis broker.

A second Airflow (its own metadata database and Postier database) runs the CeleryExecutor with the
session's Redis as broker, the Celery results in its metadata database, and two `airflow celery
worker` processes, each with its own POSTIER_HOME; the GED and the run files are on storage both
reach. The same invoices are prepared, sent (confirmed through the API) and printed there and on
the LocalExecutor Airflow of `conftest.py`: the database, the GED and the run files must come out
the same. Then one worker is SIGKILLed in the middle of a send chunk: its chunk task is retried on
the other worker, every invoice is sent, stamped and archived exactly once.

Size: POSTIER_E2E_CELERY_INVOICES invoices (default 1000: the module stays around two minutes on
an idle 2-core machine; set it to a few thousand for a heavier check).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from builders import insert_customer, insert_invoices
from integration.sshd import SshServer
from pypdf import PdfReader

from postier.airflow.preload import PRELOADED_CODE
from postier.pipeline.context import demo_identity
from postier.store.cluster import LocalCluster

from .live_airflow import CELERY, Airflow, running_airflow
from .live_redis import RedisServer
from .test_send_through_airflow import (
    CLERK,
    SEND,
    assert_run_succeeded,
    confirm,
    trigger,
)
from .test_task_preload import task_code_origins

PREPARE, PRINT = "factures_preparer_envoi", "factures_imprimer"
INVOICES = int(os.environ.get("POSTIER_E2E_CELERY_INVOICES", "1000"))
CUSTOMERS = 20
KILL_INVOICES = 800
#: Batch numbers of this module's invoices (the LocalExecutor's database is shared).
BATCH, KILL_BATCH = 9100, 9200
CHUNK_TASK = "traiter_paquet"
#: Bounds of a whole run of these sizes (a few minutes on a machine shared with other work).
BIG_RUN_TIMEOUT = 900

pytestmark = pytest.mark.timeout(2400)

#: The Celery Airflow's scheduler idle sleep (production: 0.5 s): long enough that a run edge
#: under a third of it (2 s, room for a loaded CI machine) is the notification's doing.
IDLE_SLEEP_S = 6.0


@pytest.fixture(scope="module")
def celery_airflow(
    pg_cluster: LocalCluster, redis_server: RedisServer, sshd: SshServer
) -> Iterator[Airflow]:
    def configure(af: Airflow) -> None:
        storage = sshd.base / "storage" / af.home.name
        storage.mkdir(parents=True)
        # One signing key for both workers, as production configures it (never each host's own).
        pkcs12, passphrase = demo_identity(af.home / "signing-source", "Postier")
        signing = {
            "conn_type": "generic",
            "password": passphrase.decode(),
            "extra": {"pkcs12_base64": base64.b64encode(pkcs12).decode()},
        }
        af.settings = {
            "AIRFLOW_CONN_POSTIER_SIGNING": json.dumps(signing),
            # Run files on the sshd (SFTP, its host key checked, key login).
            **sshd.storage_environment(storage),
            # The GED on a folder both workers reach.
            "POSTIER_GED_URL": str(af.home / "shared" / "ged"),
            # A killed worker's chunk is retried (on the other worker), at once.
            "POSTIER_TASK_RETRIES": "1",
            "POSTIER_RETRY_DELAY_SECONDS": "0",
            # Twelve times production's idle sleep: what the scheduler must act on (a run
            # triggered, a task's end) wakes it at once (`postier.airflow.scheduler_wake`), or
            # the runs' edges would show this sleep.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(IDLE_SLEEP_S),
        }

    # The scheduler's and api-server's POSTIER_HOME is the Airflow's own; the workers each have
    # theirs (`worker_home`).
    with running_airflow(
        pg_cluster,
        "e2e_celery",
        configure=configure,
        executor=CELERY,
        broker_url=redis_server.url,
        celery_workers=2,
    ) as af:
        yield af


# -- data and outcomes ------------------------------------------------------------------------


def seed(dsn: str, prefix: str, batch: int, count: int, state: str = "EN_ATTENTE") -> list[str]:
    """`count` invoices of batch `batch` over paper customers; the same numbers in any database."""
    with psycopg.connect(dsn) as conn:
        customers = [
            insert_customer(
                conn, code=f"{prefix}{c:03d}", name=f"Client {prefix} {c}", channel="papier"
            )
            for c in range(CUSTOMERS)
        ]
        numbers = [f"{prefix}-{n:06d}" for n in range(count)]
        invoices = [
            (customers[n % CUSTOMERS], 1 + n % 3, {"number": number, "batch_number": batch})
            for n, number in enumerate(numbers)
        ]
        insert_invoices(conn, invoices, send_state=state)
    return numbers


def database_state(dsn: str, batch: int) -> dict[str, Any]:
    """What a user sees of the batch's invoices, without times nor ids (which differ by run)."""
    with psycopg.connect(dsn) as conn:
        invoices = conn.execute(
            "SELECT number, send_state, state_changed_by, edited_by, edited_at IS NOT NULL, "
            "sent_by, sent_at IS NOT NULL, dematerialized, fingerprint IS NOT NULL "
            "FROM invoices WHERE batch_number = %s ORDER BY number",
            (batch,),
        ).fetchall()
        exchanges = conn.execute(
            "SELECT i.number, e.kind, e.partner, e.status, e.by FROM exchanges e "
            "JOIN invoices i ON i.id = e.invoice_id WHERE i.batch_number = %s",
            (batch,),
        ).fetchall()
        documents = conn.execute(
            "SELECT i.number, d.kind, d.signed FROM documents d "
            "JOIN invoices i ON i.id = d.invoice_id WHERE i.batch_number = %s",
            (batch,),
        ).fetchall()
    return {
        "invoices": [tuple(row) for row in invoices],
        "exchanges": Counter(tuple(row) for row in exchanges),
        "documents": Counter(tuple(row) for row in documents),
    }


def run_files(output_dir: str) -> dict[str, int | None]:
    """The run's files (name → page count for PDFs), its own id taken out of the names. On the
    SFTP storage, read from the sshd's folder (this machine's disk)."""
    folder = Path(urlsplit(output_dir).path if "://" in output_dir else output_dir)
    run_prefix = re.compile(r"^\d{6}-")
    files: dict[str, int | None] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = run_prefix.sub("", str(path.relative_to(folder)))
        files[name] = len(PdfReader(path).pages) if path.suffix == ".pdf" else None
    return files


def run_the_day(airflow: Airflow, batch: int) -> dict[str, dict[str, Any]]:
    """Prepare, send (confirmed « Envoyer » through the API), print the batch; its Postier runs."""
    criteria = {"lot_debut": batch, "lot_fin": batch}
    runs = {}
    with airflow.client(CLERK) as api:
        for dag_id in (PREPARE, SEND, PRINT):
            started = time.monotonic()
            run_id = trigger(airflow, api, dag_id, criteria)
            if dag_id == SEND:
                confirm(airflow, api, run_id, "Envoyer")
            assert_run_succeeded(airflow, api, dag_id, run_id, BIG_RUN_TIMEOUT)
            runs[dag_id] = airflow.postier_run(dag_id, run_id)
            runs[dag_id]["seconds"] = round(time.monotonic() - started, 1)
            runs[dag_id]["edges"] = run_edges(api, dag_id, run_id)
    return runs


def run_edges(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, float]:
    """The scheduler's reaction times at the run's edges, in seconds: trigger → run started,
    its last task's end → run ended."""
    run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
    tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    last_end = max(datetime.fromisoformat(ti["end_date"]) for ti in tis if ti["end_date"])

    def seconds(start: datetime | str, end: str) -> float:
        start = datetime.fromisoformat(start) if isinstance(start, str) else start
        return round((datetime.fromisoformat(end) - start).total_seconds(), 2)

    return {
        "started": seconds(run["queued_at"], run["start_date"]),
        "ended": seconds(last_end, run["end_date"]),
    }


# -- tests ------------------------------------------------------------------------------------


def ged_files(root: Path, prefix: str) -> list[str]:
    """The GED's files of this module's invoices, relative to its root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{prefix}-*") if p.is_file())


def test_two_celery_workers_give_what_the_local_executor_gives(
    airflow: Airflow, celery_airflow: Airflow
) -> None:
    numbers = seed(airflow.postier_dsn, "CEL", BATCH, INVOICES)
    assert seed(celery_airflow.postier_dsn, "CEL", BATCH, INVOICES) == numbers

    # Both days at once: the machine's cores are shared, the orchestration's waits overlap.
    with ThreadPoolExecutor(2) as pool:
        local_day = pool.submit(run_the_day, airflow, BATCH)
        celery_day = pool.submit(run_the_day, celery_airflow, BATCH)
        local, celery = local_day.result(), celery_day.result()
    print(
        {
            "invoices": INVOICES,
            "local_s": {k: v["seconds"] for k, v in local.items()},
            "celery_s": {k: v["seconds"] for k, v in celery.items()},
            "local_edges_s": {k: v["edges"] for k, v in local.items()},
            "celery_edges_s": {k: v["edges"] for k, v in celery.items()},
        }
    )
    # Each run started as soon as triggered, and ended as soon as its last task ended: well
    # under the scheduler's idle sleep (6 s here), which the api-server's notification cut
    # short (all six under 2 s without it: a chance in 729).
    edges = [
        celery[dag_id]["edges"][edge]
        for dag_id in (PREPARE, SEND, PRINT)
        for edge in ("started", "ended")
    ]
    assert max(edges) < IDLE_SLEEP_S / 3, {k: v["edges"] for k, v in celery.items()}
    # Both workers took part.
    for worker in celery_airflow.workers:
        assert "Executing workload" in celery_airflow.log_file(worker).read_text(), worker
    # Every task process found its code imported by its worker before the pool forked.
    origins = {k: v for k, v in task_code_origins(celery_airflow.home / "logs").items() if v}
    assert origins and {o for found in origins.values() for o in found} == {PRELOADED_CODE}

    for dag_id in (PREPARE, SEND, PRINT):
        assert (celery[dag_id]["status"], celery[dag_id]["counts"]) == (
            local[dag_id]["status"],
            local[dag_id]["counts"],
        ), dag_id
    assert local[SEND]["counts"]["traitees"] == INVOICES

    got = database_state(celery_airflow.postier_dsn, BATCH)
    expected = database_state(airflow.postier_dsn, BATCH)
    assert {row[1] for row in expected["invoices"]} == {"ENVOYE"}
    assert got["invoices"] == expected["invoices"]
    assert got["exchanges"] == expected["exchanges"]
    assert got["documents"] == expected["documents"]

    archived = ged_files(Path(celery_airflow.settings["POSTIER_GED_URL"]), "CEL")
    assert len(archived) == INVOICES
    assert archived == ged_files(airflow.postier_home / "ged", "CEL")

    for dag_id in (PREPARE, SEND, PRINT):
        files = run_files(celery[dag_id]["output_dir"])
        assert files == run_files(local[dag_id]["output_dir"]), dag_id
    # The print file holds every invoice (one page each at least).
    assert sum(pages or 0 for pages in run_files(celery[PRINT]["output_dir"]).values()) >= INVOICES


def worker_of(airflow: Airflow, dag_id: str, run_id: str, map_index: int, attempt: int) -> str:
    """The Celery worker whose log shows it received this try of the chunk task ("" if none yet)."""
    path = f"dag_id={dag_id}/run_id={run_id}/task_id={CHUNK_TASK}/map_index={map_index}/"
    path += f"attempt={attempt}.log"
    found = [w for w in airflow.workers if path in airflow.log_file(w).read_text(errors="replace")]
    assert len(found) <= 1, f"{path} on {found}"
    return found[0] if found else ""


def chunk_numbers(dsn: str, dag_id: str, run_id: str, chunk: int) -> dict[str, str]:
    """The chunk's invoices: number → run item status."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT v.number, i.status FROM run_items i JOIN runs r ON r.id = i.run_id "
            "JOIN invoices v ON v.id = i.invoice_id WHERE r.external_id = %s AND i.chunk = %s",
            (f"{dag_id}/{run_id}", chunk),
        ).fetchall()
    return dict(rows)


def chunk_count(dsn: str, dag_id: str, run_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT i.chunk) FROM run_items i JOIN runs r ON r.id = i.run_id "
            "WHERE r.external_id = %s",
            (f"{dag_id}/{run_id}",),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_worker_killed_mid_chunk_loses_nor_doubles_anything(celery_airflow: Airflow) -> None:
    af = celery_airflow
    numbers = seed(af.postier_dsn, "KIL", KILL_BATCH, KILL_INVOICES, state="PRET")
    ged = Path(af.settings["POSTIER_GED_URL"])
    with af.client(CLERK) as api:
        run_id = trigger(af, api, SEND, {"lot_debut": KILL_BATCH, "lot_fin": KILL_BATCH})
        confirm(af, api, run_id, "Envoyer")

        def a_chunk_under_way() -> tuple[int, int, str, int] | None:
            # A chunk of a chunk task's own share (task k of W: chunks k, k + W…, done first)
            # running on a worker that has archived some of its invoices already (it commits
            # them with their states at its end).
            states = api.get(f"/dags/{SEND}/dagRuns/{run_id}/taskInstances").json()
            tasks = [ti for ti in states["task_instances"] if ti["task_id"] == CHUNK_TASK]
            archived = {p.name.split("-facture")[0] for p in ged.rglob("KIL-*.pdf")}
            for ti in tasks:
                if ti["state"] != "running":
                    continue
                task = ti["map_index"]
                worker = worker_of(af, SEND, run_id, task, 1)
                for chunk in range(task, chunk_count(af.postier_dsn, SEND, run_id), len(tasks)):
                    items = chunk_numbers(af.postier_dsn, SEND, run_id, chunk)
                    done = archived & items.keys()
                    if done and worker and set(items.values()) == {"a_traiter"}:
                        return task, chunk, worker, len(done)
            return None

        task, chunk, victim, archived = af.wait_for(
            "a send chunk under way", a_chunk_under_way, 180
        )
        af.kill_worker(victim)
        killed_at = time.monotonic()
        # Killed in its middle: some of its invoices archived, none committed.
        items = chunk_numbers(af.postier_dsn, SEND, run_id, chunk)
        assert set(items.values()) == {"a_traiter"} and archived > 0
        assert_run_succeeded(af, api, SEND, run_id, BIG_RUN_TIMEOUT)
        recovered_s = time.monotonic() - killed_at
        ti = api.get(f"/dags/{SEND}/dagRuns/{run_id}/taskInstances/{CHUNK_TASK}/{task}").json()
    (survivor,) = set(af.workers) - {victim}
    # The killed task was retried on the other worker (which may have taken up its chunk first:
    # the claim died with the killed task's connection).
    assert ti["state"] == "success" and ti["try_number"] == 2, ti
    assert worker_of(af, SEND, run_id, task, 2) == survivor
    print(
        {
            "killed": victim,
            "task": task,
            "chunk": chunk,
            "archived_before_kill": archived,
            "chunk_size": len(items),
            "recovered_s": round(recovered_s, 1),
        }
    )

    state = database_state(af.postier_dsn, KILL_BATCH)
    # Every invoice sent and stamped by the clerk, once.
    assert [row[:2] for row in state["invoices"]] == [(n, "ENVOYE") for n in numbers]
    assert {row[5] for row in state["invoices"]} == {CLERK}
    # One archived, signed document per invoice, one GED file each, one exchange of each kind.
    assert state["documents"] == Counter({(n, "facture", True): 1 for n in numbers})
    assert sorted(p.name for p in ged.rglob("KIL-*")) == [f"{n}-facture.pdf" for n in numbers]
    assert set(state["exchanges"].values()) == {1}
    kinds = Counter(row[1] for row in state["exchanges"])
    assert set(kinds.values()) == {len(numbers)}, kinds
    run = af.postier_run(SEND, run_id)
    assert (run["status"], run["counts"]["traitees"]) == ("terminee", len(numbers))
