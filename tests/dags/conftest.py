"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME (SQLite metadata) set before Airflow loads.

Retries are kept (one) with no delay, so that a retried chunk is exercised without waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from dag_files import DAGS, load_dag

os.environ.update(
    {
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="postier-airflow-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(DAGS.parent / "plugins"),
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


@pytest.fixture
def run_dag(airflow_db: None, postier_env: str) -> Iterator[Any]:
    """Run a DAG for real with `dag.test()` against the test database; returns the DagRun."""

    def run(dag_id: str, conf: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return load_dag(dag_id).test(run_conf=conf or {}, **kwargs)

    yield run


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The local Plateforme Agréée as `postier_plateforme`; no request or answer of the run may
    break the AFNOR Flow OpenAPI."""
    from postier.delivery.local_pa import running_platform
    from postier.delivery.plateforme import forget_tokens

    forget_tokens()
    for server in running_platform():
        monkeypatch.setenv("AIRFLOW_CONN_POSTIER_PLATEFORME", server.airflow_connection())
        yield server
        assert server.state.violations == []
