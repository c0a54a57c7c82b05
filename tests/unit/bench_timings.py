"""What Airflow's API gives of a task's times, for the tests of `bench/airflow_bench.py`'s
accounting: seconds from one instant (a run's trigger, a clerk's answer) turned into the API's
task records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: The instant the tests count seconds from.
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def task(
    task_id: str, queued: float, start: float, end: float, map_index: int = -1
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "map_index": map_index,
        "state": "success",
        "queued_when": at(queued),
        "start_date": at(start),
        "end_date": at(end),
    }
