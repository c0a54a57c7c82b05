"""`rapport`'s wait for the chunk tasks still at work (`_wait_for_chunk_tasks`), on the Task
SDK's answers: it looks again every `CHUNKS_RECHECK_S` (up for reschedule, no worker slot held),
goes on once they are over for good, and waits no longer than `CHUNKS_WAIT_S` from its first
look (the report then says what is done)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException

from postier.airflow.dag_factory import CHUNKS_RECHECK_S, CHUNKS_WAIT_S, _wait_for_chunk_tasks


class ChunkTasks:
    """`rapport`'s task instance as the Task SDK gives it: the states of the run's chunk tasks,
    and when `rapport` first looked at them (None before its first reschedule)."""

    def __init__(self, states: list[str | None], first_look: datetime | None) -> None:
        self.states, self.first_look = states, first_look

    def get_task_states(
        self, dag_id: str, task_ids: list[str], run_ids: list[str]
    ) -> dict[str, dict[str, str | None]]:
        return {run_ids[0]: {f"{task_ids[0]}_{i}": s for i, s in enumerate(self.states)}}

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_look


def wait(states: list[str | None], waited_s: float | None) -> None:
    """`_wait_for_chunk_tasks` for chunk tasks in `states`, `rapport` having first looked
    `waited_s` ago (None: this is its first look)."""
    first = None if waited_s is None else datetime.now(UTC) - timedelta(seconds=waited_s)
    context = {
        "ti": ChunkTasks(states, first),
        "run_id": "manual__2026-12-06",
        "dag": SimpleNamespace(dag_id="factures_envoyer"),
    }
    _wait_for_chunk_tasks(context)


def test_rapport_goes_on_once_the_chunk_tasks_are_over_for_good() -> None:
    wait(["failed", "success", "upstream_failed", "removed"], None)
    wait(["failed", "success"], CHUNKS_WAIT_S - 1)


@pytest.mark.parametrize("state", ["running", "up_for_retry", "queued", "scheduled", None])
@pytest.mark.parametrize("waited_s", [None, 0.0, CHUNKS_WAIT_S - 5])
def test_rapport_looks_again_later_while_a_chunk_task_may_still_work(
    state: str | None, waited_s: float | None
) -> None:
    before = datetime.now(UTC)
    with pytest.raises(AirflowRescheduleException) as raised:
        wait(["failed", state], waited_s)
    after = datetime.now(UTC)
    recheck = timedelta(seconds=CHUNKS_RECHECK_S)
    assert before + recheck <= raised.value.reschedule_date <= after + recheck


def test_rapport_waits_no_longer_than_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    # Past its limit, counted from its first look, it goes on (and writes the report of what is
    # done: a run with invoices still pending fails) instead of looking again.
    with caplog.at_level(logging.WARNING):
        wait(["failed", "running"], CHUNKS_WAIT_S)
    assert "Tâches de paquets encore en cours après 600 s" in caplog.text
