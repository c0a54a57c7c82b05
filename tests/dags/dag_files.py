"""Where the DAG files are, and loading one DAG from its file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


def load_dag(dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{dag_id}", DAGS / f"{dag_id}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
