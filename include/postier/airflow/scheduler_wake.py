"""The scheduler's idle sleep ended as soon as one of its LocalExecutor's tasks ends.

Airflow's scheduler loop (`SchedulerJobRunner._run_scheduler_loop`, Airflow 3.3) sleeps
`[scheduler] scheduler_idle_sleep_time` (0.5 s in production) after a loop that queued no task
and read no executor event. A task that ends during that sleep — its final state already written
by the api-server, its LocalExecutor worker's result already queued — waits for the sleep's end
before the scheduler sees it: then only are its downstream tasks queued (a send's chunk tasks after
its confirmation), or its run marked done. At each of a run's edges, every core idles meanwhile.

`wake_on_task_end(executor)` makes that sleep end when the executor's result queue has something
to read (a worker took a task or finished one): the scheduler's `time.sleep`, the one call of
that module's loop, waits on the queue's pipe for no longer than it would have slept. The loop
reads the results itself as before (`LocalExecutor.sync`), and a loop with nothing to do still
sleeps its whole idle time: at rest, and while tasks run, the scheduler's pace is Airflow's. A
sleep that cannot wait on the queue (the executor not started, or stopped) is Airflow's plain
sleep. What the api-server changes (a run triggered, a clerk's answer) still waits for the
sleep's end: the scheduler reads it from Airflow's database.

While every worker of the executor is busy (a run's chunk tasks at work, for minutes), a loop
can queue nothing before a task ends, and a task's end now wakes the scheduler: its idle sleep
is then `FULL_SLOTS_SLEEP_S` rather than 0.5 s. Each loop examines the running runs and queries
Airflow's database (≈ 25–50 ms of scheduler and PostgreSQL CPU), CPU taken from the chunks;
what waits longer meanwhile needs a free worker to go further anyway (a run triggered then
started, its first task scheduled, a clerk's answer) or is one of the scheduler's timed checks
(task heartbeats, timeouts: seconds to minutes apart), late by `FULL_SLOTS_SLEEP_S` at most.
Only when the executor says so (`slots_full`) and is the scheduler's only one (another's events
would not wake it).
"""

from __future__ import annotations

import functools
import multiprocessing.connection
import time
from collections.abc import Callable
from typing import Any

#: The scheduler's idle sleep while every worker of its executor is busy (the setting's 0.5 s
#: otherwise): under its job heartbeat's 5 s (`[scheduler] scheduler_heartbeat_sec`), far under
#: the health check's 30 s.
FULL_SLOTS_SLEEP_S = 2.0

#: The executors whose result queues wake the sleep, in the scheduler's process.
_executors: list[Any] = []


class WakingClock:
    """The `time` module for Airflow's scheduler module: the same, but its `sleep` ends as soon
    as a watched executor's result queue has something to read."""

    def __init__(self, readers: Callable[[], list[Any]], full: Callable[[], bool]) -> None:
        self._readers = readers
        self._full = full

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        readers = self._readers()
        if not readers:
            time.sleep(seconds)
            return
        if seconds > 0 and self._full():
            seconds = max(seconds, FULL_SLOTS_SLEEP_S)
        multiprocessing.connection.wait(readers, timeout=max(0.0, seconds))


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


def wake_on_task_end(executor: Any) -> bool:
    """Make the scheduler's idle sleep end when `executor` (a started LocalExecutor) has a
    result to read; True when it does (also when it already did)."""
    try:
        from airflow.jobs import scheduler_job_runner
    except ImportError:
        return False
    clock = getattr(scheduler_job_runner, "time", None)
    if clock is time:
        scheduler_job_runner.time = WakingClock(_result_readers, _slots_full)  # type: ignore[assignment]
    elif not isinstance(clock, WakingClock):
        return False  # not Airflow's module as this was written for: left alone
    if not any(watched is executor for watched in _executors):
        _executors.append(executor)
    return True
