"""A task process loads only what it uses: start-up cost is paid by every task of every run."""

from __future__ import annotations

import json
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
