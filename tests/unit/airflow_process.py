"""Code run in a fresh interpreter as an Airflow component would run it, for the tests of what
Postier does inside Airflow's own processes (`postier.airflow.preload`, `scheduler_wake`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_as_airflow(code: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with an Airflow home of its own, none of this process's
    Airflow or Postier settings; `settings` as environment variables."""
    with tempfile.TemporaryDirectory() as home:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={
                **{
                    k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))
                },
                "AIRFLOW_HOME": home,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                **settings,
            },
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
