"""The run's note in Airflow (shown in the grid): what the run did, in one French line.

A task cannot set its run's note (the Task SDK has no such call), so the task that writes the
run's report (the one that ends the run's work, or `rapport` after a failure) pushes the line as
an XCom and this listener, loaded by the `postier_run_note` plugin where runs change
state (scheduler, `dag.test()`), copies it onto the run when it ends. A note a user already wrote
is kept.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

#: XCom key of the note, pushed by the task that wrote the report (the latest one wins).
NOTE_KEY = "postier_note"


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    annotate(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    annotate(dag_run)


def annotate(dag_run: Any) -> None:
    """Set the run's note from the XCom of the task that wrote its report, within the session
    that ends the run."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:
        # `dag.test()` hands a detached run; its loop commits the thread's scoped session.
        if settings.Session is None:
            return
        session = settings.Session()
        dag_run = session.get(DagRun, dag_run.id)
    if dag_run is None or dag_run.note:
        return
    row = session.execute(
        select(XComModel.value)
        .where(
            XComModel.dag_id == dag_run.dag_id,
            XComModel.run_id == dag_run.run_id,
            XComModel.key == NOTE_KEY,
        )
        .order_by(XComModel.timestamp.desc())
    ).first()
    if row is None:
        return
    note = XComModel.deserialize_value(row)
    if isinstance(note, str) and note:
        dag_run.note = note
