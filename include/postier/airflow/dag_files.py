"""The project's DAG files, and loading one DAG from its file (demo day, tests)."""

from __future__ import annotations

import importlib.util
from typing import Any

from postier import INCLUDE_DIR

DAGS_DIR = INCLUDE_DIR.parent / "dags"


def load_dag(dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{dag_id}", DAGS_DIR / f"{dag_id}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(DAGS_DIR / f"{dag_id}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
