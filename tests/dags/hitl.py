"""Answer a Human-in-the-loop task of a `dag.test()` run, as the Airflow API does for a clerk.

`dag.test()` keeps an awaiting-input task parked until a response is recorded in the metadata
database; `Clerk` does that from a thread, with the same models and resume call as the API's
`PATCH …/hitlDetails`, and keeps what the task showed (subject, body, options).

`dag.test()` waits for the answer without a bound: a confirmation still awaiting input
`within` seconds after it appeared (answered or not), or a clerk that could not answer, fails the
test with the reason at once (the run is interrupted from the clerk's thread by a signal) instead
of hanging until pytest-timeout.

An answer can be undone by `dag.test()` itself: its task runner reports the wait through the
execution API (the row turns awaiting input, which the clerk may answer at once), then writes the
state it had returned over the row (`TaskInstance.set_state` merges the whole instance), putting
back the wait and the old `next_kwargs`. A confirmation seen awaiting input after the clerk's answer
is therefore resumed again with the same answer, as the API would on the clerk's second click.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

#: Seconds a confirmation may stay awaiting input: answered within a poll (0.3 s), it is resumed
#: by `dag.test()` within a second; this leaves room for a loaded machine.
ANSWER_WITHIN = 120.0


class Clerk:
    """Answers `option` to every confirmation of `dag_id` it sees, while the `with` lasts;
    `option=None` sees them and answers nothing (a clerk who is away)."""

    def __init__(
        self,
        dag_id: str,
        option: str | None,
        login: str = "jmartin",
        *,
        within: float = ANSWER_WITHIN,
    ) -> None:
        self.dag_id, self.option, self.login, self.within = dag_id, option, login, within
        self.asked: list[dict[str, Any]] = []
        self._answered: set[str] = set()  # task instance ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error: BaseException | None = None
        self._armed = False
        self._previous: Any = None
        self._interrupted = False

    def __enter__(self) -> Clerk:
        # Once here first: its imports in this thread, not racing the run's own (a first test
        # of a session would deadlock on Python's import locks).
        self._answer_pending()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGUSR1, self._give_up)
            self._armed = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._armed and not self._thread.is_alive():
            signal.signal(signal.SIGUSR1, self._previous or signal.SIG_DFL)
        if self._interrupted:
            # Interrupted inside one of its queries, `dag.test()`'s session (this thread's) may
            # hold a broken transaction: discarded, so that the next run starts clean.
            from airflow import settings

            settings.Session.remove()
        if self.error is not None and not self._interrupted:
            raise self.error

    def _give_up(self, signum: int, frame: object) -> None:
        """In the main thread, wherever `dag.test()` is waiting: the test fails with why."""
        if self._stop.is_set():  # the `with` is over
            return
        self._interrupted = True
        pytest.fail(f"Clerk of {self.dag_id}: {self.error}", pytrace=False)

    def _loop(self) -> None:
        awaiting_since: float | None = None
        while not self._stop.is_set():
            try:
                awaiting = self._answer_pending()
            except Exception as error:  # noqa: BLE001 — reported at once, or by __exit__
                self.error = error
                self._interrupt()
                return
            now = time.monotonic()
            awaiting_since = (awaiting_since or now) if awaiting else None
            if awaiting_since is not None and now - awaiting_since > self.within:
                answered = "answered" if self.asked else "never answered"
                self.error = AssertionError(
                    f"a confirmation ({answered}) is still awaiting input after {self.within:g} s: "
                    "dag.test() would wait for ever"
                )
                self._interrupt()
                return
            time.sleep(0.3)

    def _interrupt(self) -> None:
        if self._armed:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    def _answer_pending(self) -> int:
        """Answer the confirmations not answered yet; how many tasks await input."""
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
                if detail is None or self.option is None:  # away: sees nothing, answers nothing
                    continue
                if detail.response_received:
                    if str(ti.id) not in self._answered:
                        continue
                    # Answered, yet awaiting input again: `dag.test()` wrote its stale wait over
                    # the resume (above); resumed again with the answer already recorded.
                else:
                    self.asked.append(
                        {"subject": detail.subject, "body": detail.body, "options": detail.options}
                    )
                    detail.responded_by = HITLUser(id=self.login, name=self.login)
                    detail.responded_at = datetime.now(UTC)
                    detail.chosen_options = [self.option]
                    detail.params_input = {}
                    session.add(detail)
                    self._answered.add(str(ti.id))
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()),
                    task_instance=ti,
                    session=session,
                )
            session.commit()
        return len(tis)
