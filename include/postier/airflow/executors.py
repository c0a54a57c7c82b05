"""Airflow's LocalExecutor, its task processes starting with Postier's code already imported.

    [core] executor = postier.airflow.executors.PreloadingLocalExecutor

The LocalExecutor forks its workers from the scheduler when it starts; each task process is
forked from a worker (see `preload`). This one imports the task code in the scheduler just before,
once, so that no task process imports it again; its workers free a slot as soon as the
task process ends (`task_exit`); and the scheduler's idle sleep ends as soon as a task ends
(`scheduler_wake`). Anything else is Airflow's LocalExecutor.
"""

from __future__ import annotations

from airflow.executors.local_executor import LocalExecutor

from postier.airflow.preload import preload
from postier.airflow.scheduler_wake import wake_on_task_end
from postier.airflow.task_exit import wait_for_task_exit


class PreloadingLocalExecutor(LocalExecutor):
    """The LocalExecutor, the task code imported in the scheduler before forking its workers."""

    def start(self) -> None:
        # Forked workers only: with `spawn` (or `forkserver`) a worker is a new interpreter and
        # would inherit nothing, so the scheduler would import for nobody.
        if self.is_mp_using_fork:
            preload()
            wait_for_task_exit()
        super().start()
        # After Airflow's start, which makes the result queue the scheduler's sleep waits on.
        wake_on_task_end(self)
