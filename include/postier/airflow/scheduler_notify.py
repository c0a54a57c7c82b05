"""The api-server wakes the scheduler when it has written something the scheduler must act on.

    plugins/postier_scheduler_wake.py: fastapi_root_middlewares = [WakeSchedulerMiddleware]

Airflow's scheduler reads from Airflow's database what the api-server wrote (a task's end
reported by its supervisor, a run triggered, a clerk's answer, task instances cleared), but only
at the end of its idle sleep (`[scheduler] scheduler_idle_sleep_time`). After one of those
requests has answered 2xx (its transaction committed: the app's call has returned), the
middleware asks a thread of the api-server's process to send `NOTIFY postier_scheduler_wake` on
that database; the scheduler LISTENs there (`postier.airflow.scheduler_wake`) and its sleep
ends. The request never waits for it: the thread has its own autocommit connection, opened when
first needed, reopened after it broke (at most every `RETRY_S`); several requests while it sends
make one notification. Not PostgreSQL: nothing is sent.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from postier.airflow.scheduler_wake import (
    RETRY_S,
    DatabaseLink,
    airflow_database_url,
    channel_statement,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The requests after which the scheduler has something to do: method, then the path's end
#: (Airflow may be served under a prefix).
WAKING_REQUESTS = re.compile(
    r"PATCH .*/execution/task-instances/[^/]+/state/?"
    r"|POST .*/api/v2/dags/[^/]+/dagRuns/?"
    r"|PATCH .*/api/v2/dags/[^/]+/dagRuns/[^/]+/taskInstances/[^/]+/[^/]+/hitlDetails/?"
    r"|POST .*/api/v2/dags/[^/]+/clearTaskInstances/?"
    r"|POST .*/api/v2/dags/[^/]+/dagRuns/[^/]+/clear/?"
)


class Notifier:
    """Sends `NOTIFY` on `CHANNEL` from a thread of its own each time `wake` was called."""

    def __init__(self, url: Callable[[], str | None], retry_s: float = RETRY_S) -> None:
        self._link = DatabaseLink(url, "postier-scheduler-notify", retry_s=retry_s)
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Have the scheduler woken; returns at once."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="postier-scheduler-wake", daemon=True
                    )
                    self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self._notify()
            except Exception:  # never let the thread die: the next request tries again
                log.exception("Réveil du scheduler : notification non envoyée.")

    def _notify(self) -> None:
        import psycopg

        for _ in range(2):  # a connection found broken is reopened once at once
            conn = self._link.get()
            if conn is None:
                return
            try:
                conn.execute(channel_statement("NOTIFY"))
                return
            except psycopg.Error:
                self._link.drop(retry_at_once=True)


_notifier: tuple[int, Notifier] | None = None


def wake_scheduler() -> None:
    """Wake the scheduler (Airflow's metadata database being PostgreSQL); returns at once."""
    global _notifier
    # Per process: a forked api-server worker gets a thread and a connection of its own.
    if _notifier is None or _notifier[0] != os.getpid():
        _notifier = (os.getpid(), Notifier(airflow_database_url))
    _notifier[1].wake()


class WakeSchedulerMiddleware:
    """ASGI middleware: after a request the scheduler must act on answered 2xx, `wake`."""

    def __init__(self, app: ASGIApp, wake: Callable[[], None] = wake_scheduler) -> None:
        self.app = app
        self.wake = wake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not WAKING_REQUESTS.fullmatch(
            f"{scope['method']} {scope['path']}"
        ):
            await self.app(scope, receive, send)
            return
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, sending)
        # The call has returned: the request's session committed (the scheduler will see it).
        if 200 <= status < 300:
            try:
                self.wake()
            except Exception:
                log.exception("Réveil du scheduler : notification non demandée.")
