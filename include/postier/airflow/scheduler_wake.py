"""The scheduler's idle sleep ended as soon as there is something for it to act on.

Airflow's scheduler loop (`SchedulerJobRunner._run_scheduler_loop`, Airflow 3.3) sleeps
`[scheduler] scheduler_idle_sleep_time` (0.5 s in production) after a loop that queued no task
and read no executor event. A task that ends during that sleep — its final state already written
by the api-server, its LocalExecutor worker's result already queued — waits for the sleep's end
before the scheduler sees it: then only are its downstream tasks queued (a send's chunk tasks after
its confirmation), or its run marked done. At each of a run's edges, every core idles meanwhile.

`watch_executor(executor)` makes that sleep end when the executor's result queue has something
to read (a worker took a task or finished one): the scheduler's `time.sleep`, the one call of
that module's loop, waits on the queue's pipe for no longer than it would have slept. The loop
reads the results itself as before (`LocalExecutor.sync`), and a loop with nothing to do still
sleeps its whole idle time: at rest, and while tasks run, the scheduler's pace is Airflow's. A
sleep that cannot wait on the queue (the executor not started, or stopped) is Airflow's plain
sleep.

What the api-server changes (a task's end reported by its supervisor, whatever the executor; a
run triggered; a clerk's answer; task instances cleared) the scheduler reads from Airflow's
database, at the sleep's end. The api-server then sends `NOTIFY postier_scheduler_wake` on that
database (`postier.airflow.scheduler_notify`), and the sleep also waits on a connection of the
scheduler's that LISTENs on it (`WakeListener`, PostgreSQL only): opened at the first sleep,
reopened at most every `RETRY_S` if it breaks, Airflow's plain sleep meanwhile. The
`postier_scheduler_wake` plugin installs this clock when the scheduler's job starts, whatever
its executor (Celery's too).

While every worker of the executor is busy (a run's chunk tasks at work, for minutes), a loop
can queue nothing before a task ends, and a task's end wakes the scheduler: its idle sleep is
then `FULL_SLOTS_SLEEP_S` rather than 0.5 s (on Celery, while it has tasks with Celery and the
notifications' connection is open: `postier.airflow.celery_executor`). Each loop examines the
running runs and queries Airflow's database (≈ 25–50 ms of scheduler and PostgreSQL CPU), CPU
taken from the chunks; what waits longer meanwhile is what nobody notifies, the scheduler's
timed checks (task heartbeats, retries, timeouts: seconds to minutes apart), late by
`FULL_SLOTS_SLEEP_S` at most. Only when the executor says so (`slots_full`) and is the
scheduler's only one (another's events would not wake it).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing.connection
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

#: The channel the api-server notifies when the scheduler has something to act on.
CHANNEL = "postier_scheduler_wake"

#: How long a scheduler whose LISTEN connection broke (or could not open) sleeps as Airflow does
#: before opening it again: a database down is not retried twice a second.
RETRY_S = 30.0

#: The scheduler's idle sleep while every worker of its executor is busy (the setting's 0.5 s
#: otherwise): under its job heartbeat's 5 s (`[scheduler] scheduler_heartbeat_sec`), far under
#: the health check's 30 s.
FULL_SLOTS_SLEEP_S = 2.0

#: The executors whose result queues wake the sleep, in the scheduler's process.
_executors: list[Any] = []


def libpq_url(sqlalchemy_url: str) -> str | None:
    """The libpq URL of Airflow's `[database] sql_alchemy_conn`; None if not PostgreSQL."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(sqlalchemy_url)
    except Exception:
        return None
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def airflow_database_url() -> str | None:
    """Airflow's metadata database as a libpq URL, None if it is not PostgreSQL."""
    from airflow.configuration import conf

    return libpq_url(conf.get("database", "sql_alchemy_conn", fallback=""))


def channel_statement(command: Literal["LISTEN", "NOTIFY"]) -> Any:
    """`LISTEN` or `NOTIFY` on `CHANNEL`, the channel quoted as an identifier."""
    from psycopg import sql

    return sql.SQL("{} {}").format(sql.SQL(command), sql.Identifier(CHANNEL))


class DatabaseLink:
    """An autocommit connection to Airflow's database, opened when first asked for and again
    after it was `dropped`, at most every `retry_s`; none if that database is not PostgreSQL.
    Shared by the scheduler's listener and the api-server's notifier."""

    def __init__(
        self,
        url: Callable[[], str | None],
        application_name: str,
        *,
        retry_s: float = RETRY_S,
        setup: Any = None,
    ) -> None:
        self._url = url
        self._application_name = application_name
        self._retry_s = retry_s
        self._setup = setup
        self.conn: Any = None
        self._next_try = 0.0

    def get(self) -> Any:
        """The connection, or None while it cannot be opened."""
        if self.conn is None and time.monotonic() >= self._next_try:
            self._open()
        return self.conn

    def _open(self) -> None:
        import psycopg

        self._next_try = time.monotonic() + self._retry_s
        url = self._url()
        if url is None:
            self._next_try = float("inf")  # not PostgreSQL: never
            return
        try:
            conn = psycopg.connect(
                url, autocommit=True, connect_timeout=5, application_name=self._application_name
            )
            if self._setup is not None:
                conn.execute(self._setup)
        except Exception as error:
            # The class only: a connection error may name the host and user.
            log.warning(
                "Réveil du scheduler indisponible (%s) : veille ordinaire d'Airflow.",
                type(error).__name__,
            )
            return
        self.conn = conn

    def drop(self, *, retry_at_once: bool = False) -> None:
        """Close the connection (found broken, or no longer wanted); the next is opened at the
        next `get` if `retry_at_once`, else `retry_s` later."""
        conn, self.conn = self.conn, None
        self._next_try = 0.0 if retry_at_once else time.monotonic() + self._retry_s
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class WakeListener:
    """A connection to Airflow's database that LISTENs on `CHANNEL`, opened when first needed;
    none (Airflow's plain sleep) while it cannot be opened or after it broke, `retry_s` apart."""

    def __init__(self, url: Callable[[], str | None], retry_s: float = RETRY_S) -> None:
        self._retry_s = retry_s
        self._link = DatabaseLink(
            url, "postier-scheduler-wake", retry_s=retry_s, setup=channel_statement("LISTEN")
        )

    def waitable(self) -> Any:
        """The connection to wait on (it has a `fileno`), or None."""
        return self._link.get()

    def drain(self) -> bool:
        """Read what the connection received; True if it was a notification. A broken
        connection is closed (`waitable` opens another `retry_s` later)."""
        import psycopg

        conn = self._link.conn
        if conn is None:
            return False
        notified = False
        try:
            conn.pgconn.consume_input()
            while conn.pgconn.notifies() is not None:
                notified = True
            if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                raise ConnectionError
        except Exception:
            log.warning(
                "Réveil du scheduler : connexion perdue, rouverte dans %.0f s.", self._retry_s
            )
            self._link.drop()
        return notified

    def close(self) -> None:
        self._link.drop()


class WakingClock:
    """The `time` module for Airflow's scheduler module: the same, but its `sleep` ends as soon
    as a watched executor's result queue has something to read, or the api-server notifies."""

    def __init__(
        self,
        readers: Callable[[], list[Any]],
        full: Callable[[], bool],
        listener: WakeListener | None = None,
    ) -> None:
        self._readers = readers
        self._full = full
        self._listener = listener

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def _waitables(self) -> tuple[list[Any], Any]:
        readers = self._readers()
        listen = self._listener.waitable() if self._listener is not None else None
        return (readers + [listen] if listen is not None else readers), listen

    def sleep(self, seconds: float) -> None:
        waitables, listen = self._waitables()
        if not waitables:
            time.sleep(seconds)
            return
        started = time.monotonic()
        asked = started + max(0.0, seconds)
        if seconds > 0 and self._full():
            seconds = max(seconds, FULL_SLOTS_SLEEP_S)
        deadline = started + max(0.0, seconds)
        while True:
            ready = multiprocessing.connection.wait(
                waitables, timeout=max(0.0, deadline - time.monotonic())
            )
            if not ready or any(r is not listen for r in ready):
                return
            assert self._listener is not None
            if self._listener.drain():
                return
            # Readable without a notification: the connection broke (closed by `drain`) or
            # the server said something else. The rest of the sleep without it if it broke,
            # no longer than asked if nothing else can wake it.
            waitables, listen = self._waitables()
            if not waitables:
                time.sleep(max(0.0, min(deadline, asked) - time.monotonic()))
                return


def _result_readers() -> list[Any]:
    """The read ends of the watched executors' result queues that are open (a queue is made
    anew at each `start` and closed by `end`)."""
    readers = []
    for executor in _executors:
        reader = getattr(getattr(executor, "result_queue", None), "_reader", None)
        if reader is not None and not reader.closed:
            readers.append(reader)
    return readers


def _slots_full() -> bool:
    """Whether every watched executor has no free worker (its `slots_full()`), they being the
    scheduler's only executors (`[core] executor` names one)."""
    return (
        _sole_executor()
        and bool(_executors)
        and all(getattr(executor, "slots_full", lambda: False)() for executor in _executors)
    )


@functools.cache
def _sole_executor() -> bool:
    from airflow.configuration import conf

    return len(conf.get("core", "executor", fallback="").split(",")) == 1


def install_waking_clock() -> bool:
    """Make the scheduler module's idle sleep a `WakingClock`'s, woken by the api-server's
    notifications; True when it is (also when it already was)."""
    try:
        from airflow.jobs import scheduler_job_runner
    except ImportError:
        return False
    clock = getattr(scheduler_job_runner, "time", None)
    if clock is time:
        listener = WakeListener(airflow_database_url)
        scheduler_job_runner.time = WakingClock(_result_readers, _slots_full, listener)  # type: ignore[assignment]
    elif not isinstance(clock, WakingClock):
        return False  # not Airflow's module as this was written for: left alone
    return True


def watch_executor(executor: Any) -> bool:
    """Make the scheduler's idle sleep end when `executor` (started) has a result to read (a
    LocalExecutor's queue), and last `FULL_SLOTS_SLEEP_S` while it says `slots_full`; True when
    it does (also when it already did)."""
    if not install_waking_clock():
        return False
    if not any(watched is executor for watched in _executors):
        _executors.append(executor)
    return True


@hookimpl
def on_starting(component: Any) -> None:
    """Airflow listener (`postier_scheduler_wake` plugin), called as each job starts: in the
    scheduler's process (its module imported by the `scheduler` command), its clock."""
    if "airflow.jobs.scheduler_job_runner" in sys.modules:
        install_waking_clock()
