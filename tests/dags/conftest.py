"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME (SQLite metadata) set before Airflow loads.

Retries are kept (one) with no delay, so that a retried chunk is exercised without waiting.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

os.environ.update(
    {
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="postier-airflow-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "POSTIER_TASK_RETRIES": "1",
        "POSTIER_RETRY_DELAY_SECONDS": "0",
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-3000:]


def load_dag(dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{dag_id}", DAGS / f"{dag_id}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture
def run_dag(airflow_db: None, postier_env: str) -> Iterator[Any]:
    """Run a DAG for real with `dag.test()` against the test database; returns the DagRun."""

    def run(dag_id: str, conf: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return load_dag(dag_id).test(run_conf=conf or {}, **kwargs)

    yield run
