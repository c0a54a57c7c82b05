"""Run a treatment as its DAG does, without Airflow: select, every chunk, finalize, report."""

from __future__ import annotations

import uuid
from typing import Any

from postier.pipeline.context import Environment
from postier.pipeline.reports import RunFailedError, finalize, write_report
from postier.pipeline.runs import process_part, start_run


def run_treatment(
    env: Environment,
    treatment: str,
    params: dict[str, Any] | None = None,
    actor: str = "jmartin",
    *,
    fails: bool = False,
) -> dict[str, Any]:
    """One run as the DAG does it (the send's confirmation answered yes); its report.

    `fails`: the run is expected to fail once its report is written (e.g. every invoice
    refused), as its DAG's report task would."""
    external = f"{treatment}/test-{uuid.uuid4().hex[:8]}"
    started = start_run(env, treatment, params or {}, actor, external)
    # The chunk tasks one after the other, the last first: it does its share, then the others'.
    for part in reversed(started["parts"]):
        process_part(env, external, part["part"], part["parts"])
    try:
        write_report(env, external, finalize(env, external))
    except RunFailedError:
        if not fails:
            raise
    else:
        assert not fails, "the run was expected to fail"
    with env.connect() as conn:
        row = conn.execute("SELECT report FROM runs WHERE external_id = %s", (external,)).fetchone()
    assert row is not None
    return dict(row[0])
