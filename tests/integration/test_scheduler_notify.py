"""The api-server's writes the scheduler must act on end its idle sleep at once, through
PostgreSQL's NOTIFY (`postier.airflow.scheduler_notify` → `postier.airflow.scheduler_wake`);
without the notification, or with its connection broken, the sleep is Airflow's whole one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Response

from postier.airflow.scheduler_notify import Notifier, WakeSchedulerMiddleware
from postier.airflow.scheduler_wake import FULL_SLOTS_SLEEP_S, WakeListener, WakingClock


def _api_server(dsn: str) -> tuple[FastAPI, Notifier]:
    """The api-server's routes that matter here, behind the middleware as the plugin adds it."""
    app = FastAPI()

    @app.patch("/execution/task-instances/{ti_id}/state", status_code=204)
    def task_state(ti_id: str) -> Response:
        return Response(status_code=204)

    @app.put("/execution/task-instances/{ti_id}/heartbeat", status_code=204)
    def heartbeat(ti_id: str) -> Response:
        return Response(status_code=204)

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    def trigger(dag_id: str) -> Response:
        return Response(status_code=409 if dag_id == "deja_lance" else 200)

    notifier = Notifier(lambda: dsn, retry_s=0.0)
    app.add_middleware(WakeSchedulerMiddleware, wake=notifier.wake)
    return app, notifier


def _request(app: FastAPI, method: str, path: str, after: float) -> threading.Thread:
    """`method path` sent to `app` from another thread `after` seconds from now."""

    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            await client.request(method, path)

    def later() -> None:
        time.sleep(after)
        asyncio.run(call())

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def _timed(clock: WakingClock, seconds: float, during: Callable[[], threading.Thread]) -> float:
    thread = during()
    started = time.monotonic()
    clock.sleep(seconds)
    elapsed = time.monotonic() - started
    thread.join()
    return elapsed


def _terminate(dsn: str, application_name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    assert killed, f"no {application_name} connection to break"
    time.sleep(0.2)


@pytest.fixture
def listener(owner_dsn: str) -> Iterator[WakeListener]:
    listener = WakeListener(lambda: owner_dsn, retry_s=0.0)
    yield listener
    listener.close()


def nothing_to_read() -> list[object]:
    return []


def no_request() -> threading.Thread:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    return thread


def test_a_task_end_or_a_trigger_wakes_the_scheduler_at_once(
    owner_dsn: str, listener: WakeListener
) -> None:
    app, _ = _api_server(owner_dsn)
    clock = WakingClock(nothing_to_read, lambda: False, listener)
    clock.sleep(0.01)  # LISTENing from now on, as after the scheduler's first loop

    def ends() -> threading.Thread:
        return _request(app, "PATCH", "/execution/task-instances/ti-1/state", 0.3)

    def triggered() -> threading.Thread:
        return _request(app, "POST", "/api/v2/dags/factures_envoyer/dagRuns", 0.3)

    # 8 s asked: woken by the notification ≈ 0.3 s later, not 8 s later.
    assert 0.25 <= _timed(clock, 8.0, ends) < 1.0
    assert 0.25 <= _timed(clock, 8.0, triggered) < 1.0
    # What the scheduler has nothing to do after (a heartbeat, a refused trigger): the whole sleep.
    heartbeat = _timed(
        clock, 1.0, lambda: _request(app, "PUT", "/execution/task-instances/ti-1/heartbeat", 0.2)
    )
    refused = _timed(
        clock, 1.0, lambda: _request(app, "POST", "/api/v2/dags/deja_lance/dagRuns", 0.2)
    )
    assert heartbeat >= 0.95 and refused >= 0.95, (heartbeat, refused)

    # The api-server's connection lost (a database restart): the next request opens another.
    _terminate(owner_dsn, "postier-scheduler-notify")
    assert 0.25 <= _timed(clock, 8.0, ends) < 1.0


def test_a_broken_listen_connection_falls_back_to_airflows_sleep(owner_dsn: str) -> None:
    app, _ = _api_server(owner_dsn)
    # Reopened only after a minute, as a database down is not retried at every loop.
    listener = WakeListener(lambda: owner_dsn, retry_s=60.0)
    clock = WakingClock(nothing_to_read, lambda: False, listener)
    clock.sleep(0.01)
    _terminate(owner_dsn, "postier-scheduler-wake")

    # The broken connection is seen (readable, then closed): the rest of the sleep is slept,
    # no error, no loop woken for nothing; then Airflow's plain sleep, notifications or not.
    assert _timed(clock, 0.5, no_request) >= 0.45
    assert listener.waitable() is None
    ends = _timed(
        clock, 1.0, lambda: _request(app, "PATCH", "/execution/task-instances/t/state", 0.2)
    )
    assert ends >= 0.95
    listener.close()


def test_a_database_that_is_not_postgresql_is_airflows_sleep() -> None:
    from postier.airflow.scheduler_wake import libpq_url

    assert libpq_url("sqlite:////tmp/airflow.db") is None
    assert libpq_url("mysql+mysqldb://airflow:secret@db/airflow") is None
    assert (
        libpq_url("postgresql+psycopg://airflow:s%40cret@db:5432/airflow?sslmode=require")
        == "postgresql://airflow:s%40cret@db:5432/airflow?sslmode=require"
    )
    listener = WakeListener(lambda: None)
    clock = WakingClock(nothing_to_read, lambda: False, listener)
    started = time.monotonic()
    clock.sleep(0.3)
    assert time.monotonic() - started >= 0.28


#: In a fresh interpreter, as a Celery scheduler whose Airflow database is the test's: Postier's
#: CeleryExecutor started, then the scheduler module's idle sleep (0.5 s asked) timed: no task
#: with Celery; a task with Celery (its end will wake it); that task's end notified after 0.3 s;
#: the notifications' connection broken.
CELERY_PROBE = """
import json, sys, threading, time
import psycopg
from airflow.jobs import scheduler_job_runner
from postier.airflow.celery_executor import WakingCeleryExecutor
dsn = sys.argv[1]
executor = WakingCeleryExecutor()
executor.start()

def timed(seconds=0.5):
    started = time.monotonic()
    scheduler_job_runner.time.sleep(seconds)
    return time.monotonic() - started

def task_ends():
    time.sleep(0.3)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('NOTIFY "postier_scheduler_wake"')

idle = timed()
executor.workloads["une tâche"] = None
full = timed()
threading.Thread(target=task_ends).start()
woken = timed()
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'postier-scheduler-wake'")
time.sleep(0.2)
broken = timed()
after = timed()
print(json.dumps({"idle": idle, "full": full, "woken": woken, "broken": broken, "after": after}))
"""


def test_a_celery_scheduler_sleeps_longer_while_its_tasks_run(
    owner_dsn: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))}
    out = subprocess.run(
        [sys.executable, "-c", CELERY_PROBE, owner_dsn],
        env=env
        | {
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "postier.airflow.celery_executor.WakingCeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": owner_dsn.replace(
                "postgresql://", "postgresql+psycopg://", 1
            ),
            # psycopg 3 for the async engine too (Airflow would pick asyncpg, not installed).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": owner_dsn.replace(
                "postgresql://", "postgresql+psycopg_async://", 1
            ),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    # Nothing with Celery: Airflow's 0.5 s (a run triggered would wake it anyway).
    assert 0.45 <= got["idle"] < FULL_SLOTS_SLEEP_S, got
    # A task with Celery: nothing to queue before it ends, which wakes it: the longer sleep.
    assert got["full"] >= FULL_SLOTS_SLEEP_S - 0.05, got
    assert 0.25 <= got["woken"] < FULL_SLOTS_SLEEP_S - 0.5, got
    # Its end could no longer wake it: Airflow's sleep, not the longer one.
    assert got["broken"] < FULL_SLOTS_SLEEP_S - 0.5 and 0.45 <= got["after"] < 1.0, got
