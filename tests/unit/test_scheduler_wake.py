"""The scheduler's idle sleep ends as soon as a task of its LocalExecutor ends, not after its whole
`scheduler_idle_sleep_time` (`postier.airflow.scheduler_wake`); with nothing to read it sleeps as
long as before, longer while every worker is busy."""

from __future__ import annotations

import inspect
import json
from typing import Any

from airflow_process import run_as_airflow

from postier.airflow.scheduler_wake import FULL_SLOTS_SLEEP_S

#: In a fresh interpreter, as the scheduler: Postier's executor started (its preload made to fail
#: at once: not what is tested), then the scheduler module's idle sleep timed three ways: a
#: worker's result put on the executor's queue during it (what a LocalExecutor worker does when
#: its task ends), a result left unread (the loop reads it next), nothing to read.
PROBE = """
import json, threading, time
from airflow.jobs import scheduler_job_runner
from postier.airflow import executors, preload
preload.PRELOADED = ("postier.module_absent",)
executor = executors.PreloadingLocalExecutor(parallelism=1)
executor.start()

def timed_sleep(seconds):
    started = time.monotonic()
    scheduler_job_runner.time.sleep(seconds)
    return time.monotonic() - started

def task_ends():
    time.sleep(0.3)
    executor.result_queue.put(("une tâche", "success", None))

threading.Thread(target=task_ends).start()
woken = timed_sleep(8.0)
unread = timed_sleep(8.0)
executor.result_queue.get()
idle = timed_sleep(0.5)
# Its one worker handed a task: the longer sleep, still woken when the task ends; the result
# read as the scheduler's loop reads it (`sync`), the worker free again.
executor._busy.add("une tâche")
full = timed_sleep(0.5)
threading.Thread(target=task_ends).start()
full_woken = timed_sleep(0.5)
executor.sync()
freed = timed_sleep(0.5)
# A worker killed with its task (nothing reported): no longer counted busy.
executor._busy.add("une autre tâche")
[worker] = executor.workers.values()
worker.kill()
worker.join()
executor.sync()
after_death = executor.slots_full()
executor.end()
stopped = timed_sleep(0.2)
print(json.dumps({"woken": woken, "unread": unread, "idle": idle, "full": full,
                  "full_woken": full_woken, "freed": freed, "after_death": after_death,
                  "stopped": stopped,
                  "monotonic": scheduler_job_runner.time.monotonic is time.monotonic}))
"""


def _run_as_scheduler(code: str) -> dict[str, Any]:
    out = run_as_airflow(
        code, AIRFLOW__CORE__EXECUTOR="postier.airflow.executors.PreloadingLocalExecutor"
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_the_schedulers_idle_sleep_ends_when_a_task_ends() -> None:
    got = _run_as_scheduler(PROBE)

    # 8 s asked, a task ended after 0.3 s: woken then (2 s of margin for a loaded machine).
    assert 0.25 <= got["woken"] < 2.5, got
    # Its result not yet read by the loop: no sleep at all, the loop reads it at once.
    assert got["unread"] < 1.0, got
    # Nothing to read: the whole idle sleep, as Airflow's.
    assert 0.45 <= got["idle"] < FULL_SLOTS_SLEEP_S, got
    # Every worker busy: nothing to queue before a task ends, which wakes it; a longer sleep.
    assert got["full"] >= FULL_SLOTS_SLEEP_S - 0.05, got
    assert 0.25 <= got["full_woken"] < FULL_SLOTS_SLEEP_S - 0.5, got
    assert 0.45 <= got["freed"] < FULL_SLOTS_SLEEP_S, got
    assert got["after_death"] is False
    # The executor stopped (its queue closed): Airflow's plain sleep, not an error.
    assert got["stopped"] >= 0.18, got
    # The rest of the module's clock is the `time` module's.
    assert got["monotonic"] is True


def test_the_scheduler_loop_sleeps_through_its_modules_time() -> None:
    # What `scheduler_wake` replaces: an Airflow whose loop sleeps some other way would leave
    # the wake silently off; this says so on upgrade.
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    source = inspect.getsource(SchedulerJobRunner._run_scheduler_loop)
    assert "time.sleep(min(self._scheduler_idle_sleep_time, next_event or 0))" in source
