"""Where the DAG files are, and loading one DAG from its file (the package's own loader)."""

from __future__ import annotations

from postier import INCLUDE_DIR
from postier.airflow.dag_files import DAGS_DIR as DAGS
from postier.airflow.dag_files import load_dag

ROOT = INCLUDE_DIR.parent

__all__ = ["DAGS", "ROOT", "load_dag"]
