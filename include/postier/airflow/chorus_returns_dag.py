"""Airflow glue of `chorus_retours`: schedule and the return source (the default arguments:
`postier.env_settings.task_defaults`, read when the DAG file is parsed).

Nothing here touches a connection at import time; the source is resolved when the task runs.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import CronTriggerTimetable

from postier.errors import ConfigurationError

DAG_ID = "chorus_retours"

#: Every quarter of an hour, Paris time: Chorus publishes its returns through the day.
EVERY_15_MINUTES = CronTriggerTimetable("*/15 * * * *", timezone="Europe/Paris")
START = datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))

#: A local folder laid out like the Chorus SFTP (`out/`, `processed/`, `quarantine/`).
RETURNS_DIR_VARIABLE = "POSTIER_CHORUS_RETURNS_DIR"


def reconcile_returns(context: Any) -> dict[str, Any]:
    """The task: apply the new return files, write the run report, return its summary.

    The source is the local folder `POSTIER_CHORUS_RETURNS_DIR` when set (tests, demo), else the
    Chorus SFTP server (`postier_chorus_sftp`), one session for the whole run.
    """
    from postier.airflow.runtime import actor, environment, external_id
    from postier.pipeline.chorus_returns import LocalReturnSource, reconcile

    env = environment()
    who, ref = actor(context), external_id(context)
    folder = os.environ.get(RETURNS_DIR_VARIABLE)
    if folder:
        return reconcile(env, LocalReturnSource(Path(folder)), actor=who, external_id=ref)
    if env.chorus_sftp is None:
        raise ConfigurationError(
            "aucune source de retours Chorus configurée : connexion postier_chorus_sftp "
            f"(ou POSTIER_CHORUS_SFTP_URL), ou dossier local {RETURNS_DIR_VARIABLE}"
        )
    from postier.delivery.chorus_sftp import ChorusSftp

    with ChorusSftp(env.chorus_sftp) as server:
        return reconcile(env, server, actor=who, external_id=ref)
