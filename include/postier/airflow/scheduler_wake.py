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
"""

from __future__ import annotations

import multiprocessing.connection
import time
from collections.abc import Callable
from typing import Any

#: The executors whose result queues wake the sleep, in the scheduler's process.
_executors: list[Any] = []


class WakingClock:
    """The `time` module for Airflow's scheduler module: the same, but its `sleep` ends as soon
    as a watched executor's result queue has something to read."""

    def __init__(self, readers: Callable[[], list[Any]]) -> None:
        self._readers = readers

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        readers = self._readers()
        if not readers:
            time.sleep(seconds)
            return
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


def wake_on_task_end(executor: Any) -> bool:
    """Make the scheduler's idle sleep end when `executor` (a started LocalExecutor) has a
    result to read; True when it does (also when it already did)."""
    try:
        from airflow.jobs import scheduler_job_runner
    except ImportError:
        return False
    clock = getattr(scheduler_job_runner, "time", None)
    if clock is time:
        scheduler_job_runner.time = WakingClock(_result_readers)  # type: ignore[assignment]
    elif not isinstance(clock, WakingClock):
        return False  # not Airflow's module as this was written for: left alone
    if not any(watched is executor for watched in _executors):
        _executors.append(executor)
    return True
