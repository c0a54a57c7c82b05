"""Every task process logs its peak memory when it ends (one line, read by the Airflow bench to
show it flat in the run's volume)."""

from __future__ import annotations

import logging
import re

import psycopg
import pytest
from builders import insert_invoice

from postier.airflow.dag_factory import logs_peak_memory

LINE = re.compile(r"^Mémoire max de la tâche : (\d+) Mio \(VmHWM\)$")


def _status_mib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    raise AssertionError(field)


def test_a_task_logs_its_peak_memory_when_it_ends_even_on_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ballast = []
    rss, peak = _status_mib("VmRSS"), _status_mib("VmHWM")
    size = peak - rss + 64  # MiB: takes the process 64 MiB above its peak so far

    @logs_peak_memory
    def task() -> None:
        ballast.append(bytearray(size * 1024 * 1024))  # touched
        raise RuntimeError("échec")

    with caplog.at_level(logging.INFO, logger="postier.airflow.dag_factory"):
        with pytest.raises(RuntimeError):
            task()
    (line,) = [r.getMessage() for r in caplog.records if LINE.match(r.getMessage())]
    match = LINE.match(line)
    assert match and int(match.group(1)) >= peak + 48  # the peak the task reached, not before


def test_every_task_of_a_run_logs_its_peak_memory(  # type: ignore[no-untyped-def]
    run_dag, postier_env, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="MEM-1")
    with caplog.at_level(logging.INFO, logger="postier.airflow.dag_factory"):
        dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    # Each chunk task (the first selects, one writes the report): one line each.
    assert len([r for r in caplog.records if LINE.match(r.getMessage())]) == 4
