"""What `postier.airflow.preload` imports is what a selection and its chunks import: a task process
forked after it (scheduler, Celery worker) imports none of the task code or its libraries again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
from builders import insert_customer, insert_invoice

ROOT = Path(__file__).resolve().parents[2]

#: The task code and the libraries it uses (none of it may be imported after the preload).
TASK_LIBRARIES = {
    "postier",
    "reportlab",
    "pyhanko",
    "pyhanko_certvalidator",
    "lxml",
    "facturx",
    "PIL",
    "asn1crypto",
    "cryptography",
    "fsspec",
    "psycopg",
    "pypdf",
    "pandas",
}

#: As the scheduler: preload; then as its task processes: a prepare's then a send's selection and
#: chunks. What each imported that the preload had not.
PROBE = """
import json, sys, uuid
from pathlib import Path
from postier.airflow.preload import preload
assert preload()
from postier.pipeline.context import Environment
env = Environment(dsn=sys.argv[1], home=Path(sys.argv[2]), workers=1)
imported = {}
for treatment in ("factures_preparer_envoi", "factures_envoyer"):
    before = set(sys.modules)
    from postier.pipeline.runs import process_chunk, start_run
    summary = start_run(env, treatment, {}, "jmartin", f"{treatment}/{uuid.uuid4().hex[:8]}")
    for chunk in summary["chunks"]:
        process_chunk(env, summary["run_id"], chunk)
    imported[treatment] = sorted(set(sys.modules) - before)
print(json.dumps(imported))
"""


def test_a_prepare_and_a_send_import_nothing_the_preload_left_out(
    db_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for channel in ("papier", "portail", "chorus"):
            customer = insert_customer(conn, channel=channel)
            for _ in range(2):
                insert_invoice(conn, customer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, db_dsn, str(tmp_path / "home")],
        cwd=ROOT,
        env=env | {"AIRFLOW_HOME": str(tmp_path / "airflow")},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    imported = json.loads(out.stdout.splitlines()[-1])
    with psycopg.connect(db_dsn) as conn:
        states = conn.execute("SELECT send_state, count(*) FROM invoices GROUP BY 1").fetchall()
    assert states == [("ENVOYE", 6)], out.stderr[-3000:]
    left_out = {
        treatment: [m for m in modules if m.split(".")[0] in TASK_LIBRARIES]
        for treatment, modules in imported.items()
    }
    assert left_out == {"factures_preparer_envoi": [], "factures_envoyer": []}
