"""Airflow's LocalExecutor, its task processes starting with Postier's code already imported.

    [core] executor = postier.airflow.executors.PreloadingLocalExecutor

The LocalExecutor forks its workers from the scheduler when it starts; each task process is
forked from a worker (see `preload`). This one imports the task code in the scheduler just before,
once, so that no task process imports it again; its workers free a slot as soon as the
task process ends (`task_exit`); and the scheduler's idle sleep ends as soon as a task ends
(`scheduler_wake`), after a longer sleep while every worker is busy (`slots_full`). Anything
else is Airflow's LocalExecutor.
"""

from __future__ import annotations

from typing import Any

from airflow.executors.local_executor import LocalExecutor

from postier.airflow.preload import preload
from postier.airflow.scheduler_wake import watch_executor
from postier.airflow.task_exit import wait_for_task_exit


class PreloadingLocalExecutor(LocalExecutor):
    """The LocalExecutor, the task code imported in the scheduler before forking its workers."""

    def start(self) -> None:
        # Forked workers only: with `spawn` (or `forkserver`) a worker is a new interpreter and
        # would inherit nothing, so the scheduler would import for nobody.
        if self.is_mp_using_fork:
            preload()
            wait_for_task_exit()
        # The workloads handed to the workers and not yet reported done: Airflow 3.3's
        # LocalExecutor leaves its `running` set empty, so its `slots_available` cannot tell.
        self._busy: set[Any] = set()
        super().start()
        # After Airflow's start, which makes the result queue the scheduler's sleep waits on.
        watch_executor(self)

    def _process_workloads(self, workload_list: Any) -> None:
        super()._process_workloads(workload_list)
        self._busy.update(workload.key for workload in workload_list)

    def change_state(
        self, key: Any, state: Any, info: Any = None, remove_running: bool = True
    ) -> None:
        super().change_state(key, state, info, remove_running)
        # A callback's worker reports it running, then done: only its end frees the worker.
        if str(state) != "running":
            self._busy.discard(key)

    def _check_workers(self) -> None:
        workers = set(getattr(self, "workers", {}))
        super()._check_workers()
        if workers - set(self.workers):
            # A worker died, and with it what it ran, unreported: which is not known, so none
            # is counted busy (the scheduler's 0.5 s pace) until the next workloads are handed.
            self._busy.clear()

    def slots_full(self) -> bool:
        """Whether every worker has a workload (`scheduler_wake`: the scheduler may sleep
        longer, a task's end waking it)."""
        return len(getattr(self, "_busy", ())) >= self.parallelism
