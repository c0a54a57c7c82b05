"""Run a treatment as its DAG does, without Airflow: select, every chunk, finalize, report."""

from __future__ import annotations

import uuid
from typing import Any

from postier.pipeline.context import Environment
from postier.pipeline.reports import finalize, write_report
from postier.pipeline.runs import process_chunk, start_run


def run_treatment(
    env: Environment, treatment: str, params: dict[str, Any] | None = None, actor: str = "jmartin"
) -> dict[str, Any]:
    """One run as the DAG does it (the send's confirmation answered yes); its report."""
    external = f"{treatment}/test-{uuid.uuid4().hex[:8]}"
    started = start_run(env, treatment, params or {}, actor, external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)
    write_report(env, external, finalize(env, external))
    with env.connect() as conn:
        row = conn.execute("SELECT report FROM runs WHERE external_id = %s", (external,)).fetchone()
    assert row is not None
    return dict(row[0])
