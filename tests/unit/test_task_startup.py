"""A task process loads only what it uses: start-up cost is paid by every task of every run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What every task process loads: its DAG file, the runtime and the task functions' modules.
TASK_MODULES = [
    "postier.airflow.runtime",
    "postier.pipeline.runs",
    "postier.pipeline.handlers",
    "postier.pipeline.reports",
    "postier.pipeline.mailing",
    "postier.pipeline.chorus_returns",
    "postier.delivery.chorus_sftp",
]

#: Heavy imports that only some code paths need (the command line, a Chorus connection, the
#: export's page count, rendering).
HEAVY = ["pandas", "paramiko", "pypdf", "postier.documents"]

PROBE = """
import importlib, json, runpy, sys
for path in sys.argv[2:]:
    runpy.run_path(path)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from postier.delivery.chorus_sftp import SftpConfig
SftpConfig.from_url("sftp://depot@chorus.example:22/flux", "ssh-ed25519 AAAA")
print(json.dumps(sorted(sys.modules)))
"""


def test_task_modules_do_not_import_heavy_libraries() -> None:
    dag_files = sorted(str(p) for p in (ROOT / "dags").glob("*.py"))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(TASK_MODULES), *dag_files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert set(TASK_MODULES) <= loaded
    pulled = sorted(h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in loaded))
    assert pulled == [], f"a task process imports {pulled} without using them"


#: What a task process does with the plugins folder (its listeners, `get_listener_manager`),
#: then what the api-server does (the FastAPI apps it mounts).
PLUGINS_PROBE = """
import json, sys
from airflow.sdk.listener import get_listener_manager
get_listener_manager()
in_task = "postier.airflow.reports_app" in sys.modules
from airflow.plugins_manager import get_fastapi_plugins
apps, _ = get_fastapi_plugins()
again, _ = get_fastapi_plugins.__wrapped__()
print(json.dumps({
    "in_task": in_task,
    "mounted": [(a["url_prefix"], type(a["app"]).__name__) for a in apps],
    "one_app": [a["app"] for a in apps] == [a["app"] for a in again],
}))
"""


def test_a_task_process_loads_the_plugins_without_building_the_pages(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))}
    out = subprocess.run(
        [sys.executable, "-c", PLUGINS_PROBE],
        cwd=ROOT,
        env=env
        | {
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout.splitlines()[-1])
    # Building the clerk's pages (FastAPI, their modules) cost each task ≈ 0.5 s of CPU.
    assert got["in_task"] is False
    assert got == {"in_task": False, "mounted": [["/postier", "FastAPI"]], "one_app": True}
