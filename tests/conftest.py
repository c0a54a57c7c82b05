"""Session-wide real services for the tests.

One throwaway PostgreSQL cluster per test session (the project's own `LocalCluster`, run as the
`postgres` user under root), a migrated template database, and a fresh database per test cloned
from it (`CREATE DATABASE … TEMPLATE`, a few tens of milliseconds).

`db_dsn` and `conn` connect as the task role (`postier_app`), as the DAGs' tasks do: no TRUNCATE,
no DDL, no owner rights. A test that needs those (a fault-injection trigger, a migration) uses
`owner_dsn`, the same database as the owner role.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from facturx_validation import FacturxValidator

from postier.store.cluster import LocalCluster
from postier.store.migrations import migrate

TEMPLATE = "postier_template"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    base = Path(tempfile.mkdtemp(prefix="postier-test-pg-"))
    base.chmod(0o755)  # the server runs as `postgres` and must reach its data folder
    cluster = LocalCluster(base / "pg")
    cluster.start()
    cluster.create_database(TEMPLATE)
    with psycopg.connect(cluster.owner_dsn(TEMPLATE)) as conn:
        migrate(conn)
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def db_name(pg_cluster: LocalCluster) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_cluster.create_database(name, template=TEMPLATE)
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture
def db_dsn(pg_cluster: LocalCluster, db_name: str) -> str:
    """The test's database as the task role (what the DAGs' tasks connect as)."""
    return pg_cluster.dsn(db_name)


@pytest.fixture
def owner_dsn(pg_cluster: LocalCluster, db_name: str) -> str:
    """The test's database as the owner role: DDL, fault-injection triggers, migrations."""
    return pg_cluster.owner_dsn(db_name)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn) as connection:
        yield connection


@pytest.fixture
def postier_env(
    db_dsn: str, owner_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Environment of a command-line run against the test database."""
    monkeypatch.setenv("POSTIER_DB_DSN", db_dsn)
    monkeypatch.setenv("POSTIER_DB_OWNER_DSN", owner_dsn)
    monkeypatch.setenv("POSTIER_HOME", str(tmp_path / "home"))
    return db_dsn


@pytest.fixture(scope="session")
def facturx_validator() -> FacturxValidator:
    """XSD + Factur-X EN 16931 + BR-FR schematrons, compiled once per session."""
    return FacturxValidator()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under integration/ and e2e/ need real services: mark them for `-m`.
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if "faults" in parts:
            item.add_marker(pytest.mark.faults)


os.environ.setdefault("TZ", "Europe/Paris")
