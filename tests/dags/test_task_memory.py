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


def test_a_task_logs_its_peak_memory_when_it_ends_even_on_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ballast = []

    @logs_peak_memory
    def task() -> None:
        ballast.append(bytearray(64 * 1024 * 1024))  # 64 MiB, touched
        raise RuntimeError("échec")

    with caplog.at_level(logging.INFO, logger="postier.airflow.dag_factory"):
        with pytest.raises(RuntimeError):
            task()
    (line,) = [r.getMessage() for r in caplog.records if LINE.match(r.getMessage())]
    match = LINE.match(line)
    assert match and int(match.group(1)) >= 64


def test_every_task_of_a_run_logs_its_peak_memory(  # type: ignore[no-untyped-def]
    run_dag, postier_env, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="MEM-1")
    with caplog.at_level(logging.INFO, logger="postier.airflow.dag_factory"):
        dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    # selectionner, the chunk, rapport: one line each.
    assert len([r for r in caplog.records if LINE.match(r.getMessage())]) == 3
