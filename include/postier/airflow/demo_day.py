"""`postier demo day`: a realistic day of a billing clerk, run through Airflow on the demo data.

Each treatment runs as a real DAG run (`dag.test()`, in-process, against the project's Airflow
home). The send confirmation is approved automatically — for the demo only; in the UI a clerk
answers it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from postier import INCLUDE_DIR
from postier.store import database

DAGS_DIR = INCLUDE_DIR.parent / "dags"


def prepare_airflow_home() -> Path:
    """Airflow's home under `<POSTIER_HOME>/airflow` with its SQLite metadata, migrated."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(database.home() / "airflow")))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_DIR))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the demo prints its own
    if not (home / "airflow.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
        )
    return home


def _dag(dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"demo_{dag_id}", DAGS_DIR / f"{dag_id}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _report(dsn: str) -> tuple[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return row[0]["rapport"], row[0]["compteurs"]


def _batches_with_zero_invoices(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT batch_number FROM invoices WHERE total_gross = 0 "
            "AND send_state = 'EN_ATTENTE' ORDER BY 1 LIMIT 3"
        ).fetchall()
    return [r[0] for r in rows]


def run_day() -> list[tuple[str, str, dict[str, Any]]]:
    """Run the day's treatments; (step, report path, counts) for each."""
    prepare_airflow_home()
    dsn = database.resolve_dsn()
    os.environ.setdefault("POSTIER_DB_DSN", dsn)
    with psycopg.connect(dsn) as conn:
        first = conn.execute("SELECT min(batch_number) FROM invoices").fetchone()
    lot = int(first[0]) if first and first[0] is not None else 0
    steps: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (
            "Aperçu des factures du premier lot",
            "factures_imprimer",
            {"mode": "apercu", "lot_debut": lot, "lot_fin": lot},
            {},
        ),
        ("Impression des traites (LCR, billet à ordre)", "factures_imprimer_traites", {}, {}),
        ("Impression des factures jamais imprimées", "factures_imprimer", {"mode": "imprimer"}, {}),
    ]
    for batch in _batches_with_zero_invoices(dsn):
        steps.append(
            (
                f"Conservation en interne du lot {batch} (factures à 0 €)",
                "factures_conserver_en_interne",
                {"lot_debut": batch, "lot_fin": batch, "etats": ["EN_ATTENTE"]},
                {},
            )
        )
    steps += [
        ("Préparation de l'envoi", "factures_preparer_envoi", {}, {}),
        (
            "Mise en attente du premier lot",
            "factures_mettre_en_attente",
            {"lot_debut": lot, "lot_fin": lot},
            {},
        ),
        (
            "Envoi définitif (confirmation approuvée pour la démo)",
            "factures_envoyer",
            {},
            {"mark_success_pattern": "confirmation"},
        ),
    ]
    done = []
    for label, dag_id, conf, options in steps:
        print(f"→ {label} ({dag_id})", flush=True)
        dag_run = _dag(dag_id).test(run_conf=conf, **options)
        path, counts = _report(dsn)
        print(f"  {dag_run.state} — {counts} — rapport : {path}", flush=True)
        done.append((label, path, counts))
    return done
