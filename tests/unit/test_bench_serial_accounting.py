"""The Airflow bench counts a serial step made inside a task (the run's selection, a send's
deliveries, each logged by the task that makes it) once, as serial work, not as mapped-task
overhead."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bench_timings import at, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import CHUNK_TASK, PREPARE, SEND, RunTiming, task_figures  # noqa: E402


def test_a_serial_step_made_in_a_task_counts_once_as_serial_work() -> None:
    # The prepare: its first chunk task selects (1 s, the other slot waiting for it).
    prepare = RunTiming(PREPARE, "p", 10.0, queued_at=at(0))
    prepare.tasks = [task(CHUNK_TASK, 0, 1, 10, 0), task(CHUNK_TASK, 0, 1, 9, 1)]
    prepare.chunk_work_s = {0: 7.0, 1: 6.0}
    prepare.selection_s = prepare.selection_in_chunks_s = 1.0
    # The send: its confirmation selects (0.5 s, outside the chunks), the chunk task that ends
    # the run delivers (2 s, the other slot done).
    send = RunTiming(SEND, "s", 12.0, queued_at=at(20))
    send.tasks = [
        task("confirmation", 20, 20.5, 40),
        task(CHUNK_TASK, 40, 41, 50, 0),
        task(CHUNK_TASK, 40, 41, 48, 1),
    ]
    send.chunk_work_s = {0: 6.0, 1: 6.0}
    send.selection_s, send.delivery_s = 0.5, 2.0

    figures = task_figures([prepare, send], slots=2)

    # Both slots' time during a serial step made in a chunk task leaves the chunks' phase:
    # 2 × (10 − 1) − 13 for the prepare, 2 × (10 − 2) − 12 for the send.
    assert figures["mapped_idle_s"] == pytest.approx(5.0 + 4.0)
    assert figures["mapped_overhead_s"] == pytest.approx(9.0 / 4)
    # Each step's seconds once in the serial cost; no task of its own (the confirmation apart).
    assert figures["serial_tasks"] == 0
    assert figures["serial_s"] == pytest.approx(1.0 + 0.5 + 2.0)
    assert (figures["selection_s"], figures["delivery_s"]) == pytest.approx((1.5, 2.0))
