"""The task code preloaded where task processes are forked from (`postier.airflow.preload`):
nothing that makes forking unsafe, and an executor that still runs tasks when it fails."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
from airflow_process import run_as_airflow

from postier.airflow import preload

#: In a fresh interpreter, as the scheduler or the Celery worker: what `preload` leaves open
#: (file descriptors and what they point to, threads), before and after.
PROBE = """
import json, os, sys
from postier.airflow import executors, preload

def state():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, closed since
            pass
    return {"fds": fds, "threads": len(os.listdir("/proc/self/task"))}

before = state()
done = preload.preload()
after = state()
print(json.dumps({"done": done, "before": before, "after": after,
                  "modules": sorted(sys.modules)}))
"""


def _run_as_airflow(code: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter as Airflow runs it, with no Postier database; `settings`,
    Airflow's, as environment variables."""
    # A database that is not there: preloading must not need one.
    return run_as_airflow(
        code, POSTIER_DB_DSN="postgresql://postier@127.0.0.1:1/absente", **settings
    )


def test_preload_leaves_no_socket_file_or_thread_behind_to_fork() -> None:
    out = _run_as_airflow(PROBE)
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["done"] is True, out.stderr[-3000:]
    assert got["after"] == got["before"], "preload left descriptors or threads behind"
    assert got["after"]["threads"] == 1
    # What a chunk uses is there, so that no task process imports it again.
    assert {"postier.documents", "pyhanko.sign.general", "postier.pipeline.handlers"} <= set(
        got["modules"]
    )
    assert "psycopg_pool" not in got["modules"]


def test_a_failed_preload_is_logged_in_french_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(preload, "PRELOADED", ("postier.module_absent",))
    monkeypatch.setattr(preload, "_preloaded", False)
    with caplog.at_level(logging.WARNING, logger=preload.__name__):
        assert preload.preload() is False
    assert not preload.preloaded()
    [record] = caplog.records
    assert record.getMessage().startswith("Préchargement du code des tâches impossible (")
    assert "chaque tâche importera elle-même ce dont elle a besoin" in record.getMessage()


#: The executor with a preload that fails: its workers still start and run a workload, and
#: free their slot when a task process ends (`task_exit`, inherited by the forked workers).
EXECUTOR_PROBE = """
import json, multiprocessing
from airflow.sdk.execution_time.supervisor import WatchedSubprocess
from postier.airflow import executors, preload
preload.PRELOADED = ("postier.module_absent",)
executor = executors.PreloadingLocalExecutor(parallelism=2)
executor.start()
workers = len(executor.workers)
alive = all(p.is_alive() for p in executor.workers.values())
executor.end()
waits = getattr(WatchedSubprocess._service_subprocess, "_postier_waits_for_task_exit", False)
print(json.dumps({"workers": workers, "alive": alive, "preloaded": preload.preloaded(),
                  "waits_for_task_exit": waits}))
"""


def test_the_executor_starts_its_workers_when_the_preload_fails() -> None:
    out = _run_as_airflow(EXECUTOR_PROBE)
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "workers": 2,
        "alive": True,
        "preloaded": False,
        "waits_for_task_exit": True,
    }
    assert "Préchargement du code des tâches impossible" in out.stdout + out.stderr


#: A Celery worker built as `airflow celery worker` builds it in its main process, before its pool
#: forks (Celery's `Worker`, which sends `worker_init`; it connects to no broker until started),
#: from the app Airflow configures with `[celery] celery_config_options`.
CELERY_WORKER_PROBE = """
import json, sys
from airflow.sdk.execution_time.supervisor import WatchedSubprocess
from airflow.providers.celery.executors.celery_executor_utils import app
from postier.airflow import preload

def waits():
    return getattr(WatchedSubprocess._service_subprocess, "_postier_waits_for_task_exit", False)

configured, before = "postier.airflow.celery_config" in sys.modules, waits()
app.Worker(pool_cls="solo", concurrency=1, hostname="postier-test@localhost")
print(json.dumps({"configured": configured, "before": before, "waits_for_task_exit": waits(),
                  "preloaded": preload.preloaded()}))
"""


def test_the_celery_worker_preloads_and_frees_its_slots_before_its_pool_starts() -> None:
    out = _run_as_airflow(
        CELERY_WORKER_PROBE,
        AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS="postier.airflow.celery_config.CELERY_CONFIG",
    )
    # Airflow's Celery app loads the configuration (which connects the handler); the worker's
    # `worker_init` preloads and wraps the supervisors' wait, for the pool processes it forks.
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "configured": True,
        "before": False,
        "waits_for_task_exit": True,
        "preloaded": True,
    }, out.stderr[-3000:]
