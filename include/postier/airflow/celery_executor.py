"""Airflow's CeleryExecutor, its scheduler sleeping longer while its tasks run.

    [core] executor = postier.airflow.celery_executor.WakingCeleryExecutor

On Celery every task's end, as every run triggered and every clerk's answer, wakes the
scheduler's idle sleep (the api-server's notification, `postier.airflow.scheduler_wake`). While
tasks it sent are with Celery (a run's chunk tasks, for minutes), what the scheduler must act on
then wakes it: its idle sleep is `FULL_SLOTS_SLEEP_S`, not 0.5 s, as the LocalExecutor's while
its workers are busy, and each loop's queries (the running tasks' Celery states read from the
result backend, the running runs examined) take CPU from the chunks a quarter as often. Only
while the notification's connection is open (else Airflow's sleep), only as the scheduler's sole
executor. Anything else is Airflow's CeleryExecutor; this module is imported by the scheduler
only (the workers run Airflow's Celery app, `celery_config`).
"""

from __future__ import annotations

from airflow.providers.celery.executors.celery_executor import CeleryExecutor

from postier.airflow.scheduler_wake import watch_executor


class WakingCeleryExecutor(CeleryExecutor):
    """The CeleryExecutor, the scheduler's sleep longer while it has tasks with Celery."""

    def start(self) -> None:
        super().start()
        watch_executor(self)

    def slots_full(self) -> bool:
        """Whether every task handed to it is with Celery (sent, not yet ended), one at least:
        the scheduler has nothing to queue before one of them ends or the api-server writes
        something, both of which wake it (the workers' slots, which the scheduler does not
        know, are the limit that counts on Celery, not `parallelism`)."""
        return bool(self.workloads) and not self.queued_tasks
