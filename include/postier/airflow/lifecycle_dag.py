"""Airflow glue of `plateforme_cycle_de_vie`: schedule and the task.

Nothing here touches a connection at import time; the PA is resolved when the task runs.
"""

from __future__ import annotations

from typing import Any

from postier.airflow.chorus_returns_dag import EVERY_15_MINUTES, START

DAG_ID = "plateforme_cycle_de_vie"

__all__ = ["DAG_ID", "EVERY_15_MINUTES", "START", "poll_lifecycle"]


def poll_lifecycle(context: Any) -> dict[str, Any]:
    """The task: read and apply the new lifecycle flows of the PA, return the report's summary."""
    from postier.airflow.runtime import actor, environment, external_id
    from postier.pipeline.lifecycle_flows import poll

    return poll(environment(), actor=actor(context), external_id=external_id(context))
