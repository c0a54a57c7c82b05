"""Task processes start with Postier's code already imported by the process that forks them.

On the LocalExecutor of production (`postier.airflow.executors.PreloadingLocalExecutor`, which
the harness runs) the scheduler imports it before forking its workers; on Celery the worker
before forking its pool (`tests/e2e/test_celery_executor.py` checks its task logs with
`task_code_origins`). Each task logs where its code came from when it starts working
(`runtime.environment()`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from builders import insert_customer, insert_invoice

from postier.airflow.preload import IMPORTED_CODE, PRELOADED_CODE

from .live_airflow import Airflow
from .test_send_through_airflow import CLERK, assert_run_succeeded, invoices, trigger

PREPARE = "factures_preparer_envoi"
#: Batch number of this module's invoices (the session's Postier database is shared).
BATCH = 701

#: The line `runtime.environment()` logs (STARTUP_LOG), with where the task code came from.
STARTUP = re.compile(
    r"Processus de tâche : [0-9.]+ s de CPU avant son travail, code des tâches "
    rf"({PRELOADED_CODE}|{IMPORTED_CODE})"
)


def task_code_origins(folder: Path) -> dict[str, list[str]]:
    """For each task log under `folder` (one a task try), where its code came from (nothing for
    a task that runs no Postier code, the send's confirmation)."""
    return {
        str(path.relative_to(folder)): STARTUP.findall(path.read_text(errors="replace"))
        for path in sorted(folder.rglob("*.log"))
    }


@pytest.fixture
def api(airflow: Airflow) -> Iterator[httpx.Client]:
    with airflow.client(CLERK) as client:
        yield client


def test_every_task_process_starts_with_the_task_code_preloaded(
    airflow: Airflow, api: httpx.Client
) -> None:
    with psycopg.connect(airflow.postier_dsn) as conn:
        customer = insert_customer(conn, channel="papier")
        numbers = [f"PRELOAD-{n}" for n in range(3)]
        for number in numbers:
            insert_invoice(conn, customer, number=number, batch_number=BATCH)

    run_id = trigger(airflow, api, PREPARE, {"lot_debut": BATCH, "lot_fin": BATCH})
    assert_run_succeeded(airflow, api, PREPARE, run_id)

    # The chunk rendered the invoices' documents with the preloaded package.
    got = invoices(airflow.postier_dsn, numbers)
    assert {n: got[n]["send_state"] for n in numbers} == dict.fromkeys(numbers, "PRET")
    origins = task_code_origins(airflow.home / "logs" / f"dag_id={PREPARE}" / f"run_id={run_id}")
    tasks = {name.split("/")[0] for name in origins}
    # A prepare that goes well: its chunk task writes the report, `rapport` starts no process.
    assert tasks == {"task_id=traiter_paquet"}, origins
    assert origins == dict.fromkeys(origins, [PRELOADED_CODE]), origins
