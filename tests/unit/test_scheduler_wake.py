"""The scheduler's idle sleep ends as soon as a task of its LocalExecutor ends, not after its whole
`scheduler_idle_sleep_time` (`postier.airflow.scheduler_wake`); with nothing to read it sleeps as
long as before."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
executor.end()
stopped = timed_sleep(0.2)
print(json.dumps({"woken": woken, "unread": unread, "idle": idle, "stopped": stopped,
                  "monotonic": scheduler_job_runner.time.monotonic is time.monotonic}))
"""


def _run_as_scheduler(code: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={
                **{
                    k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))
                },
                "AIRFLOW_HOME": home,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "postier.airflow.executors.PreloadingLocalExecutor",
            },
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_the_schedulers_idle_sleep_ends_when_a_task_ends() -> None:
    got = _run_as_scheduler(PROBE)

    # 8 s asked, a task ended after 0.3 s: woken then (2 s of margin for a loaded machine).
    assert 0.25 <= got["woken"] < 2.5, got
    # Its result not yet read by the loop: no sleep at all, the loop reads it at once.
    assert got["unread"] < 1.0, got
    # Nothing to read: the whole idle sleep, as Airflow's.
    assert got["idle"] >= 0.45, got
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
