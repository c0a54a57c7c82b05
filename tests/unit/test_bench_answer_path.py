"""The Airflow bench splits a send's path from the clerk's answer to its first chunk task ready
to work into its steps, from what Airflow and the task logs recorded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bench_timings import at, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import (  # noqa: E402
    CHUNK_TASK,
    READY_AT,
    SEND,
    RunTiming,
    answer_path,
)


def test_the_answer_path_is_split_into_the_schedulers_and_the_tasks_steps() -> None:
    send = RunTiming(SEND, "s", 10.0, answered_at=at(0))
    # The confirmation's start is its first task process's (before the question); it is
    # queued again when the answer resumes it.
    send.tasks = [
        task("confirmation", 0.4, -3.0, 0.6),
        task(CHUNK_TASK, 1.0, 1.1, 9, 0),
        task(CHUNK_TASK, 1.0, 1.3, 9, 1),
    ]
    send.chunk_ready_at = [at(1.5), at(1.25)]

    steps = answer_path(send)

    assert steps["answer_to_queued_s"] == pytest.approx(0.4)
    assert steps["resumed_s"] == pytest.approx(0.2)
    assert steps["end_to_chunks_queued_s"] == pytest.approx(0.4)
    assert steps["queued_to_started_s"] == pytest.approx(0.1)
    assert steps["started_to_ready_s"] == pytest.approx(0.15)
    assert steps["answer_to_ready_s"] == pytest.approx(1.25)
    assert steps["chunk_starts_spread_s"] == pytest.approx(0.2)


def test_a_run_without_an_answer_has_no_answer_path() -> None:
    prepare = RunTiming("factures_preparer_envoi", "p", 10.0)
    prepare.tasks = [task(CHUNK_TASK, 0, 0.1, 9, 0)]
    prepare.chunk_ready_at = [at(0.3)]

    assert answer_path(prepare) == {}


def test_the_ready_time_is_read_from_the_task_logs_json_line() -> None:
    line = (
        '{"timestamp":"2026-12-06T17:34:30.736688Z","level":"info","event":"Tâche prête en '
        '0.25 s, environnement résolu en 0.00 s","logger":"postier.airflow.runtime"}\n'
        '{"timestamp":"2026-12-06T17:34:31.000000Z","level":"info","event":"Paquet 0"}\n'
    )

    assert READY_AT.findall(line) == ["2026-12-06T17:34:30.736688Z"]
