"""Where PostgreSQL's and the scheduler's CPU go during `airflow_bench.py`'s runs.

    .venv/bin/python bench/airflow_profile.py OUT_DIR --invoices 3000 --celery-invoices 0
    POSTIER_PROFILE_SETTINGS='AIRFLOW__SECTION__KEY=value,…' …   # settings to compare

A measurement run only, never the default of `make bench`: `airflow_bench.py`'s runs (same
arguments, same output) with, on each run's throwaway PostgreSQL cluster, `pg_stat_statements`
(`track = all`) and `track_io_timing` switched on once the demo data is seeded, and from the
preparation's trigger to the send's success (each measure's files in a folder of its own under
OUT_DIR: `local`, then `celery-1` and `celery-2` for the Celery runs of 1 and 2 workers):
- the CPU of PostgreSQL's processes by title, sampled from /proc every 0.2 s: backends by
  database (Airflow's metadata, Postier's), checkpointer, WAL writer, autovacuum workers…
  (`pg_cpu.json`; a backend's CPU after its last sample before it exits is missed);
- every statement's calls, execution time, rows, buffers and WAL by database and role
  (`statements.json`), PostgreSQL's shared statistics (`pgstats.json`);
- the scheduler sampled by `py-spy record` (raw stacks, `scheduler.raw`; `--gil`: only while
  it holds the GIL, which approximates its CPU), when py-spy is installed (`pip install py-spy`,
  not a dependency of the project).
It prints, per measure, the CPU per PostgreSQL process kind, the statements per database and
the scheduler's functions by share of samples. Extra Airflow settings
(`POSTIER_PROFILE_SETTINGS`) go over `PRODUCTION_SETTINGS`, to measure one before adopting it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import airflow_bench as bench
import psycopg
from e2e import live_airflow
from process_cpu import ProcessTable

from postier.store.cluster import LocalCluster

OUT = Path(sys.argv.pop(1)) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else None
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def pg_processes(postmaster: int) -> dict[int, tuple[str, float]]:
    """PostgreSQL's processes (the postmaster and its children): pid → (title, CPU seconds so
    far), their CPU from `process_cpu.ProcessTable`."""
    table = ProcessTable.read()
    found: dict[int, tuple[str, float]] = {}
    for pid in (postmaster, *table.children.get(postmaster, ())):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError):  # gone meanwhile
            continue
        if pid in table.own:
            found[pid] = (title, table.own[pid])
    return found


def kind(title: str) -> str:
    """`postgres: user database host(port) state` → `backend database`; else the process's role."""
    words = title.removeprefix("postgres: ").split()
    if len(words) >= 3 and "(" in words[2]:
        return f"backend {words[1]}"
    if words[:2] == ["autovacuum", "worker"]:
        return "autovacuum worker"
    return " ".join(words[:2]) if words and not words[0].startswith("/") else "postmaster"


class Sampler(threading.Thread):
    def __init__(self, postmaster: int) -> None:
        super().__init__(daemon=True)
        self.postmaster, self.stop = postmaster, threading.Event()
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            for pid, (title, cpu) in pg_processes(self.postmaster).items():
                self.first.setdefault(pid, cpu)
                # A backend's title changes with its state, its database does not.
                self.last[pid] = (self.last.get(pid, (kind(title), 0.0))[0], cpu)
            time.sleep(0.2)

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for pid, (name, cpu) in self.last.items():
            out[name] += cpu - self.first[pid]
        return dict(out)


STATEMENTS = """
SELECT d.datname, r.rolname, s.calls, s.total_exec_time, s.rows, s.shared_blks_hit,
       s.shared_blks_read, s.shared_blks_dirtied, s.shared_blks_written, s.blk_read_time,
       s.blk_write_time, s.wal_records, s.wal_bytes::bigint, s.query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid
ORDER BY s.total_exec_time DESC
"""
COLUMNS = (
    "db role calls exec_ms rows hit read dirtied written read_ms write_ms wal_records wal_bytes"
    " query"
).split()

state: dict[str, Any] = {}
seed = bench.seed_demo_database
run_dag = bench.run_dag
#: The measures' folders under OUT, in the order `airflow_bench.py` runs them.
MEASURES = ("local", "celery-1", "celery-2")


def measure_name(af: live_airflow.Airflow) -> str:
    """The folder of `af`'s measure: each keeps its own files (a Celery run's would otherwise
    replace the LocalExecutor's)."""
    return "local" if af.executor == live_airflow.LOCAL else f"celery-{af.celery_workers}"


def seed_and_enable(cluster: LocalCluster, invoices: int) -> str:
    dsn = seed(cluster, invoices)
    with psycopg.connect(cluster.admin_dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET track_io_timing = on")
    cluster.stop()
    # The restart may move the server to another port (`LocalCluster.start` takes a free one
    # when another program listens on the old one): the DSN from before it is then stale.
    dsn = cluster.start()
    with psycopg.connect(cluster.admin_dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    state["cluster"] = cluster
    return dsn


def profiled_run(
    af: Any, api: Any, db: Any, dag_id: str, timeout: float, roots: dict[str, int]
) -> Any:
    assert OUT is not None
    cluster = state["cluster"]
    out = OUT / measure_name(af)
    if dag_id == bench.PREPARE:
        out.mkdir(exist_ok=True)
        with psycopg.connect(cluster.admin_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            conn.execute("SELECT pg_stat_reset_shared('bgwriter')")
            conn.execute("SELECT pg_stat_reset_shared('wal')")
        state["sampler"] = sampler = Sampler(roots["PostgreSQL"])
        sampler.start()
        if Path(PY_SPY).exists():
            state["spy"] = subprocess.Popen(
                [PY_SPY, "record", "--pid", str(roots["scheduler"]), "--rate", "100", "--gil"]
                + ["--nonblocking", "--format", "raw", "--output", str(out / "scheduler.raw")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    timing = run_dag(af, api, db, dag_id, timeout, roots)
    if dag_id == bench.SEND:
        sampler = state["sampler"]
        sampler.stop.set()
        sampler.join()
        if "spy" in state:
            state["spy"].send_signal(2)
            state["spy"].wait(60)
        with psycopg.connect(cluster.admin_dsn(), autocommit=True) as conn:
            rows = [dict(zip(COLUMNS, row, strict=True)) for row in conn.execute(STATEMENTS)]
            shared = {
                view: conn.execute(f"SELECT row_to_json(v) FROM {view} v").fetchone()
                for view in ("pg_stat_bgwriter", "pg_stat_wal")
            }
        (out / "statements.json").write_text(json.dumps(rows, indent=1, default=str))
        (out / "pgstats.json").write_text(json.dumps(shared, indent=1, default=str))
        (out / "pg_cpu.json").write_text(json.dumps(sampler.cpu_by_kind(), indent=1))
    return timing


def report(out: Path) -> None:
    """What one measure's files say (`out`: its folder)."""
    print(f"\n## {out.name}")
    cpu = json.loads((out / "pg_cpu.json").read_text())
    print("\n| processus PostgreSQL | CPU (s) |\n|---|---:|")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds:.2f} |")
    rows = json.loads((out / "statements.json").read_text())
    per_db: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for row in rows:
        totals = per_db[row["db"]]
        totals[0] += row["calls"]
        totals[1] += row["exec_ms"]
        totals[2] += row["wal_bytes"] or 0
    print("\n| base | instructions | exécution (ms) | WAL (octets) |\n|---|---:|---:|---:|")
    for name, (calls, ms, wal) in per_db.items():
        print(f"| {name} | {calls:.0f} | {ms:.0f} | {wal:.0f} |")
    for name in per_db:
        print(f"\n{name}: instructions les plus coûteuses (appels, ms, lignes, WAL, texte)")
        for row in [r for r in rows if r["db"] == name][:15]:
            text = " ".join(row["query"].split())[:110]
            print(
                f"  {row['calls']:7} {row['exec_ms']:9.1f} {row['rows']:7} "
                f"{row['wal_bytes'] or 0:>9} {text}"
            )
    raw = out / "scheduler.raw"
    if raw.exists():
        inclusive: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            total += int(count)
            for frame in {f.split(" (")[0] for f in stack.split(";")}:
                inclusive[frame] += int(count)
        print(f"\nscheduler, py-spy --gil : {total} échantillons, fonctions (part incluse)")
        for frame, count in inclusive.most_common(45):
            print(f"  {count / total:6.1%} {frame}")


def main() -> int:
    if OUT is None:
        print(__doc__)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    extra = os.environ.get("POSTIER_PROFILE_SETTINGS", "")
    live_airflow.PRODUCTION_SETTINGS.update(kv.split("=", 1) for kv in extra.split(",") if kv)
    bench.seed_demo_database = seed_and_enable
    bench.run_dag = profiled_run
    sys.argv = [bench.__file__, *sys.argv[1:]]
    status = bench.main()
    for name in MEASURES:
        if (OUT / name / "pg_cpu.json").exists():
            report(OUT / name)
    return status


if __name__ == "__main__":
    sys.exit(main())
