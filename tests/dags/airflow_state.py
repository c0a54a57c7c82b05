"""What Airflow's metadata database says of a `dag.test()` run: its note, as the grid shows it,
and its tasks' states."""

from __future__ import annotations

from typing import Any


def note(dag_run: Any) -> str | None:
    """The run's note as the grid shows it, read back from Airflow's metadata database."""
    from airflow import settings
    from airflow.models.dagrun import DagRun

    with settings.Session() as session:
        run = session.get(DagRun, dag_run.id)
        assert run is not None
        return run.note


def task_states(dag_run: Any) -> dict[str, str]:
    """Each task's state; a mapped task's instances as `task_id[i]`."""
    return {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state
        for ti in dag_run.get_task_instances()
    }
