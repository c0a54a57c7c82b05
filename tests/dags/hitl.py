"""Answer a Human-in-the-loop task of a `dag.test()` run, as the Airflow API does for a clerk.

`dag.test()` keeps an awaiting-input task parked until a response is recorded in the metadata
database; `Clerk` does that from a thread, with the same models and resume call as the API's
`PATCH …/hitlDetails`, and keeps what the task showed (subject, body, options).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any


class Clerk:
    """Answers `option` to every confirmation of `dag_id` it sees, while the `with` lasts."""

    def __init__(self, dag_id: str, option: str, login: str = "jmartin") -> None:
        self.dag_id, self.option, self.login = dag_id, option, login
        self.asked: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Clerk:
        # Once here first: its imports in this thread, not racing the run's own (a first test
        # of a session would deadlock on Python's import locks).
        self._answer_pending()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._answer_pending()
            except Exception as error:  # noqa: BLE001 — reported by __exit__
                self.error = error
                return
            time.sleep(0.3)

    def _answer_pending(self) -> None:
        from airflow import settings
        from airflow.models.hitl import HITLDetail, HITLUser
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select

        with settings.Session() as session:
            tis = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == self.dag_id,
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
            ).all()
            for ti in tis:
                detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
                if detail is None or detail.response_received:
                    continue
                self.asked.append(
                    {"subject": detail.subject, "body": detail.body, "options": detail.options}
                )
                detail.responded_by = HITLUser(id=self.login, name=self.login)
                detail.responded_at = datetime.now(UTC)
                detail.chosen_options = [self.option]
                detail.params_input = {}
                session.add(detail)
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()),
                    task_instance=ti,
                    session=session,
                )
            session.commit()
