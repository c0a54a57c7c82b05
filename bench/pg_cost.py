"""PostgreSQL's own cost of a prepare + send, per invoice: each server process's CPU, the WAL, HOT.

    .venv/bin/python bench/pg_cost.py 10000                    # N demo invoices, 2 workers
    WITHOUT=023_x.sql .venv/bin/python bench/pg_cost.py 10000  # the schema without that migration

On the benches' durable cluster (`bench_cluster`: fsync, full-page writes, synchronous commit),
seeded with `pipeline_bench`'s demo data, then VACUUM ANALYZE and a CHECKPOINT (a maintained
database, the run's first change of each page paying its full-page image as in production), for
the prepare run then the send run (`pipeline_bench.run_treatment`, `--workers` processes):
- the CPU of every process of the cluster, sampled from /proc every 50 ms and grouped by its
  title (the task role's backends, walwriter, checkpointer, autovacuum workers, …), the
  autovacuum workers' split by the table and pass `pg_stat_activity` shows them on; what exited
  between two samples is the remainder of the cluster's total (postmaster tree, reaped included);
- the WAL written (`pg_stat_wal`: records, full-page images, bytes) and per resource manager
  (`pg_walinspect`: Heap, Btree, …);
- per table, rows inserted / updated / of which HOT (`pg_stat_user_tables`), autovacuum and
  autoanalyze passes;
then the debt the two runs leave: a VACUUM ANALYZE of the tables they touched and a CHECKPOINT,
their CPU (the superuser's backend, the checkpointer) and WAL. Figures per invoice processed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, os.environ.get("BENCH_DIR", str(Path(__file__).resolve().parent)))
from pipeline_bench import bench_cluster, run_treatment, seed_demo_database  # noqa: E402
from process_cpu import CLOCK_TICKS, tree_cpu  # noqa: E402

from postier.pipeline.context import Environment  # noqa: E402
from postier.store import migrations  # noqa: E402

TABLES = ("invoices", "run_items", "exchanges", "documents", "runs")


def _cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _kind(pid: int) -> str | None:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None
    if not title.startswith("postgres: "):
        return "autre"
    words = title.split()[1:]
    # A client backend's title: « user database host(port) activity ».
    if len(words) >= 3 and "(" in words[2]:
        return f"backend {words[0]}"
    if words[:2] == ["autovacuum", "worker"]:
        return "autovacuum worker"
    return " ".join(w for w in words if not w.startswith("(")) or "?"


class Sampler:
    """The postmaster's children's CPU, by kind, sampled until `stop`."""

    def __init__(self, postmaster: int, admin_dsn: str) -> None:
        self.postmaster = postmaster
        # What each autovacuum worker is doing (« autovacuum: VACUUM public.invoices »): its
        # CPU since the previous sample goes to that table and pass.
        self._activity = psycopg.connect(admin_dsn, autocommit=True)
        self.autovacuum: dict[str, float] = defaultdict(float)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self._stop = threading.Event()
        self.total0 = tree_cpu(postmaster)
        self.own0 = _cpu(postmaster) or 0.0
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _children(self) -> list[int]:
        path = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
        return [int(p) for p in path.read_text().split()]

    def _sample(self, initial: bool = False) -> None:
        children = self._children()
        workers = [p for p in children if self.kind.get(p) == "autovacuum worker"]
        # Asked only while a worker runs: this connection's backend is the cluster's too.
        doing = (
            dict(
                self._activity.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE pid = ANY(%s)", (workers,)
                ).fetchall()
            )
            if workers
            else {}
        )
        for pid in children:
            cpu = _cpu(pid)
            if cpu is None:
                continue
            if pid not in self.kind:
                # Born during the window: all its CPU is the window's.
                self.first[pid] = cpu if initial else 0.0
            if self.kind.get(pid, "autre") == "autre":
                # A child just forked still bears the postmaster's command line: read again.
                kind = _kind(pid)
                if kind is None:
                    self.first.pop(pid, None)
                    continue
                self.kind[pid] = kind
            if self.kind[pid] == "autovacuum worker" and pid in self.last:
                what = doing.get(pid) or "?"
                self.autovacuum[what.removeprefix("autovacuum: ")] += cpu - self.last[pid]
            self.last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._activity.close()
        by_kind: dict[str, float] = defaultdict(float)
        for pid, kind in self.kind.items():
            by_kind[kind] += self.last[pid] - self.first[pid]
        by_kind["postmaster"] = (_cpu(self.postmaster) or 0.0) - self.own0
        total = tree_cpu(self.postmaster) - self.total0
        by_kind["non attribué (fin des processus sortis)"] = total - sum(by_kind.values())
        by_kind["total"] = total
        return dict(by_kind)


def wal(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT wal_records, wal_fpi, wal_bytes, pg_current_wal_insert_lsn() FROM pg_stat_wal"
    ).fetchone()
    assert row is not None
    return {"records": row[0], "fpi": row[1], "bytes": int(row[2]), "lsn": row[3]}


def tables(conn: psycopg.Connection) -> dict[str, tuple[int, ...]]:
    rows = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, autovacuum_count, "
        "autoanalyze_count, pg_relation_size(relid), pg_indexes_size(relid) "
        "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


def settle(conn: psycopg.Connection) -> None:
    # Backends report their statistics at most once a second, and at exit.
    time.sleep(1.2)
    conn.execute("SELECT pg_stat_clear_snapshot()")


def rmgr_stats(conn: psycopg.Connection, start: str) -> list[tuple[str, int, int, int]]:
    """(resource manager/record type, records, full-page images' bytes, bytes) of the WAL from
    `start` on."""
    rows = conn.execute(
        'SELECT "resource_manager/record_type", count, fpi_size, combined_size FROM '
        "pg_get_wal_stats(%s, pg_current_wal_flush_lsn(), true) WHERE count > 0 "
        "ORDER BY combined_size DESC",
        (start,),
    ).fetchall()
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


def report(
    label: str,
    n: int,
    cpu: dict[str, float],
    autovacuum: dict[str, float],
    w0: dict[str, Any],
    w1: dict[str, Any],
    rm: list[tuple[str, int, int, int]],
    t0: dict[str, tuple[int, ...]],
    t1: dict[str, tuple[int, ...]],
) -> None:
    k = 1000 / max(n, 1)
    print(f"\n### {label} : {n} factures")
    print("| processus | CPU (s) | ms/facture |\n|---|---:|---:|")
    for kind, v in sorted(cpu.items(), key=lambda x: (x[0] == "total", -x[1])):
        print(f"| {kind} | {v:.2f} | {v * k:.4f} |")
    for what, v in sorted(autovacuum.items(), key=lambda x: -x[1]):
        print(f"| dont autovacuum : {what} | {v:.2f} | {v * k:.4f} |")
    records, fpi = w1["records"] - w0["records"], w1["fpi"] - w0["fpi"]
    size = w1["bytes"] - w0["bytes"]
    print(
        f"WAL : {records / n:.1f} enregistrements, {fpi / n:.2f} pages entières, "
        f"{size / n:.0f} octets par facture ({size / 2**20:.1f} Mio)"
    )
    print(
        "| enregistrement WAL | nombre/facture | octets de pages entières/facture | "
        "octets/facture |\n"
        "|---|---:|---:|---:|"
    )
    for name, count, fpis, combined in rm[:10]:
        print(f"| {name} | {count / n:.2f} | {fpis / n:.0f} | {combined / n:.0f} |")
    print(
        "| table | insérées | mises à jour | dont HOT | autovacuum | autoanalyze | "
        "table + index avant → après (Mio) |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for name in TABLES:
        a, b = t0.get(name, (0,) * 7), t1.get(name, (0,) * 7)
        d = [y - x for x, y in zip(a, b, strict=True)]
        print(
            f"| {name} | {d[0]} | {d[1]} | {d[2]} | {d[3]} | {d[4]} | "
            f"{a[5] / 2**20:.1f} + {a[6] / 2**20:.1f} → {b[5] / 2**20:.1f} + {b[6] / 2**20:.1f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("invoices", type=int, nargs="?", default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    without = {w for w in os.environ.get("WITHOUT", "").split(",") if w}
    if without:
        every = migrations.migration_files
        migrations.migration_files = lambda folder=None: [  # type: ignore[assignment]
            p for p in (every() if folder is None else every(folder)) if p.name not in without
        ]
        print(f"schéma sans {sorted(without)}")
    base = Path(tempfile.mkdtemp(prefix="postier-pgcost-"))
    base.chmod(0o755)
    cluster = bench_cluster(base)
    try:
        dsn = seed_demo_database(cluster, args.invoices)
        postmaster = int(Path(cluster.data, "postmaster.pid").read_text().split()[0])
        admin = psycopg.connect(cluster.admin_dsn("postier"), autocommit=True)
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        admin.execute("VACUUM ANALYZE")
        admin.execute("CHECKPOINT")
        env = Environment(dsn=dsn, home=base / "home", workers=args.workers)
        processed = 0
        for treatment in ("factures_preparer_envoi", "factures_envoyer"):
            settle(admin)
            w0, t0 = wal(admin), tables(admin)
            sampler = Sampler(postmaster, cluster.admin_dsn("postier"))
            seconds, n, _ = run_treatment(env, treatment, args.workers)
            cpu = sampler.stop()
            settle(admin)
            w1, t1 = wal(admin), tables(admin)
            processed += n
            report(
                f"{treatment} ({seconds:.1f} s)",
                n,
                cpu,
                sampler.autovacuum,
                w0,
                w1,
                rmgr_stats(admin, w0["lsn"]),
                t0,
                t1,
            )
        w0, t0 = wal(admin), tables(admin)
        sampler = Sampler(postmaster, cluster.admin_dsn("postier"))
        admin.execute("VACUUM ANALYZE invoices, run_items, exchanges, documents, runs")
        admin.execute("CHECKPOINT")
        cpu = sampler.stop()
        settle(admin)
        w1, t1 = wal(admin), tables(admin)
        report(
            "dette des deux exécutions : VACUUM ANALYZE puis CHECKPOINT (par facture préparée "
            "ou envoyée)",
            processed,
            cpu,
            sampler.autovacuum,
            w0,
            w1,
            rmgr_stats(admin, w0["lsn"]),
            t0,
            t1,
        )
        admin.close()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
