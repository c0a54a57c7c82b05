"""The benches measure PostgreSQL as production runs it; the tests keep their faster cluster."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

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
