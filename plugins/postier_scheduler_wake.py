"""Airflow plugin: the scheduler's idle sleep ends when the api-server writes something it must
act on (postier.airflow.scheduler_notify in the api-server, postier.airflow.scheduler_wake in
the scheduler), whatever the executor."""

from airflow.plugins_manager import AirflowPlugin

from postier.airflow import scheduler_wake
from postier.airflow.scheduler_notify import WakeSchedulerMiddleware


class PostierSchedulerWakePlugin(AirflowPlugin):
    name = "postier_scheduler_wake"
    listeners = [scheduler_wake]
    fastapi_root_middlewares = [
        {"middleware": WakeSchedulerMiddleware, "name": "postier_scheduler_wake"}
    ]
