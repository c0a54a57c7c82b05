"""What Airflow's metadata database says of a `dag.test()` run: its note, as the grid shows it."""

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
