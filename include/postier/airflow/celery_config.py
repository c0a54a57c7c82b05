"""Airflow's Celery configuration, the Celery worker importing Postier's task code once.

    [celery] celery_config_options = postier.airflow.celery_config.CELERY_CONFIG

`airflow celery worker` reads this dictionary (Airflow's default one, unchanged) in its main
process, which then forks its pool processes; each of them forks a task process per task (see
`preload`). Importing this module connects `preload` to Celery's `worker_init` signal, sent in
the worker's main process before its pool starts: every pool process, hence every task process,
starts with the task code imported, and frees its slot as soon as its task process ends
(`task_exit`). The scheduler and the api-server read the dictionary too; the
signal never fires there.
"""

from __future__ import annotations

import gc
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from postier.airflow.preload import preload
from postier.airflow.task_exit import wait_for_task_exit

#: Airflow's own dictionary, the same object: Airflow then sees no user configuration to apply.
CELERY_CONFIG: dict[str, Any] = DEFAULT_CELERY_CONFIG


@worker_init.connect(weak=False)
def preload_before_the_pool(**_: Any) -> None:
    preload()
    wait_for_task_exit()
    # As Airflow's own `import_modules` handler does before the pool forks (it unfreezes when
    # the worker is ready): what was just imported moves to the permanent generation, so the
    # pool processes' garbage collections do not copy the pages it is on.
    gc.freeze()
