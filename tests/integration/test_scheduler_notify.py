"""The api-server's writes the scheduler must act on end its idle sleep at once, through
PostgreSQL's NOTIFY (`postier.airflow.scheduler_notify` → `postier.airflow.scheduler_wake`);
without the notification, or with its connection broken, the sleep is Airflow's whole one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Response

from postier.airflow.scheduler_notify import Notifier, WakeSchedulerMiddleware
from postier.airflow.scheduler_wake import WakeListener, WakingClock


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
