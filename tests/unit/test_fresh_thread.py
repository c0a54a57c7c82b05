"""The chunk work's thread (`postier.airflow.fresh_thread`): its frames start at the bottom of a
new stack whatever called it, which is what keeps CPython 3.11's data-stack blocks where they
fall on the LocalExecutor (docs/performance-notes.md); its error comes back whole."""

from __future__ import annotations

import sys
import traceback

import pytest
from structlog.contextvars import bound_contextvars, get_contextvars

from postier.airflow.fresh_thread import run_on_fresh_thread


def depth() -> int:
    frame, count = sys._getframe(), 0
    while frame is not None:
        count, frame = count + 1, frame.f_back
    return count


def called_at(extra_frames: int) -> int:
    """The work's depth when the task calls it `extra_frames` frames deeper."""
    if extra_frames:
        return called_at(extra_frames - 1)
    return run_on_fresh_thread(depth, "test")


def test_the_work_runs_at_the_same_depth_however_deep_the_task_called_it() -> None:
    # 54 and 68 frames: the LocalExecutor's and Celery's task processes before the thread.
    assert called_at(0) == called_at(14) == called_at(54) == called_at(68)
    assert called_at(0) < 10


def test_the_work_error_is_raised_in_the_task_with_its_traceback() -> None:
    def fails() -> None:
        raise ValueError("paquet 3 : facture « F-1 » refusée")

    with pytest.raises(ValueError, match="paquet 3 : facture « F-1 » refusée") as raised:
        run_on_fresh_thread(fails, "test")
    names = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert names[-3:] == ["run_on_fresh_thread", "target", "fails"], names


def test_the_work_sees_the_task_identifiers_bound_to_its_log_lines() -> None:
    # Airflow binds them as structlog context variables in the task's thread: a thread started
    # without a copy of its context would log lines that name no task.
    with bound_contextvars(ti_id="ti-42", task_id="traiter_paquet"):
        seen = run_on_fresh_thread(get_contextvars, "test")
    assert {"ti_id": "ti-42", "task_id": "traiter_paquet"}.items() <= seen.items()
