"""What Airflow's metadata database says of a `dag.test()` run: its note, as the grid shows it,
and its tasks' states; and the reports its tasks wrote."""

from __future__ import annotations

from typing import Any

import pytest

from postier.pipeline import reports


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


def count_publishes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The run of each report written from now on (`dag.test()` runs the tasks in-process)."""
    published: list[int] = []

    def counted(real):  # type: ignore[no-untyped-def]
        def publish(conn, run_id, *args, **kwargs):  # type: ignore[no-untyped-def]
            published.append(run_id)
            return real(conn, run_id, *args, **kwargs)

        return publish

    # A run's invoices (`publish_listed`), or refused at its start (`publish`).
    for name in ("publish", "publish_listed"):
        monkeypatch.setattr(reports, name, counted(getattr(reports, name)))
    return published
