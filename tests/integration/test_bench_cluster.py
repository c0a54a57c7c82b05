"""The benches measure PostgreSQL as production runs it; the tests keep their faster cluster."""

from __future__ import annotations

import importlib
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from postier.store.cluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pipeline_bench import bench_cluster  # noqa: E402

DURABILITY = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s) ORDER BY name"
SETTINGS = ["fsync", "full_page_writes", "synchronous_commit"]


def durability(cluster: LocalCluster) -> dict[str, str]:
    with psycopg.connect(cluster.dsn()) as conn:
        return dict(conn.execute(DURABILITY, (SETTINGS,)).fetchall())


def test_the_benches_commit_as_durably_as_production(pg_cluster: LocalCluster) -> None:
    base = Path(tempfile.mkdtemp(prefix="postier-bench-cluster-"))
    base.chmod(0o755)  # the server runs as `postgres` and must reach its data folder
    cluster = bench_cluster(base)
    try:
        cluster.start()
        assert durability(cluster) == dict.fromkeys(SETTINGS, "on")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    # The tests' cluster: a crash loses nothing anyone keeps, and each commit is cheaper.
    assert durability(pg_cluster) == {
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "on",
    }


@dataclass
class PortTakenWhileStopped(LocalCluster):
    """A cluster whose port another socket takes as soon as it first stops (as a closing
    connection's TIME_WAIT or another program may): its next start moves to a free port."""

    squatter: socket.socket | None = field(default=None, repr=False)

    def stop(self) -> None:
        super().stop()
        if self.squatter is None:
            self.squatter = socket.socket()
            self.squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound, not listening: a connection to the old port is refused at once.
            self.squatter.bind(("127.0.0.1", self.port))


def test_the_profile_bench_hands_on_a_dsn_that_reaches_its_restarted_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `airflow_profile` takes its output folder from the command line when imported.
    monkeypatch.setattr(sys, "argv", ["airflow_profile.py"])
    profile = importlib.import_module("airflow_profile")
    base = Path(tempfile.mkdtemp(prefix="postier-bench-profile-"))
    base.chmod(0o755)
    cluster = PortTakenWhileStopped(base / "pg")
    try:
        dsn = profile.seed_and_enable(cluster, 1)
        assert cluster.squatter is not None
        assert cluster.port != cluster.squatter.getsockname()[1]
        # The DSN the Airflow bench then measures its baseline and runs Airflow against.
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (1,)
        with psycopg.connect(cluster.admin_dsn()) as conn:
            loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        assert loaded == ("pg_stat_statements",)
    finally:
        cluster.stop()
        if cluster.squatter is not None:
            cluster.squatter.close()
        shutil.rmtree(base, ignore_errors=True)
