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
    """A cluster whose port another program listens on as soon as it first stops: its next
    start moves to a free port."""

    squatter: socket.socket | None = field(default=None, repr=False)

    def stop(self) -> None:
        super().stop()
        if self.squatter is None:
            self.squatter = socket.socket()
            # As a server would, past the TIME_WAIT of the connections the stop closed.
            self.squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.squatter.bind(("127.0.0.1", self.port))
            self.squatter.listen()


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
        # The DSN the Airflow bench then measures its baseline and runs Airflow against (the
        # old port's squatter never answers: a stale DSN fails after the timeout).
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (1,)
        with psycopg.connect(cluster.admin_dsn()) as conn:
            loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        assert loaded == ("pg_stat_statements",)
    finally:
        cluster.stop()
        if cluster.squatter is not None:
            cluster.squatter.close()
        shutil.rmtree(base, ignore_errors=True)


def time_wait_on(port: int) -> bool:
    """Whether a loopback TCP connection from `port` is in TIME_WAIT (`/proc/net/tcp`)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "06":
            return True
    return False


def test_a_restarted_cluster_keeps_its_port_past_its_closed_connections() -> None:
    # Stopped while a client is connected, the server closes the connection first: its side
    # lingers in TIME_WAIT on the server's port for a minute. A restart moved to another port
    # (the port « taken »), and whoever kept the DSN from before reached nothing.
    base = Path(tempfile.mkdtemp(prefix="postier-cluster-restart-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "pg")
    try:
        dsn = cluster.start()
        port = cluster.port
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1")
        with socket.create_connection(("127.0.0.1", port)) as client:
            cluster.stop()
            # The server's goodbye read, then the client's side closed: the server's side of
            # the connection is left in TIME_WAIT (unread, the client's close resets it).
            while client.recv(4096):
                pass
        assert time_wait_on(port)
        assert cluster.start() == dsn
        assert cluster.port == port
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postier_app",)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
