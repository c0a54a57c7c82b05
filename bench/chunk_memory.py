"""What a chunk task's memory does over its chunks, in one process, outside Airflow.

    .venv/bin/python bench/chunk_memory.py 3000            # N demo invoices, prepare then send
    TRACE=1 .venv/bin/python bench/chunk_memory.py 3000    # and tracemalloc (much slower)
    TRACE=end .venv/bin/python bench/chunk_memory.py 3000  # tracemalloc from the chunks' end
    TRIM=1 .venv/bin/python bench/chunk_memory.py 3000     # and malloc_trim after every chunk

As a chunk task does it (`traiter_paquet`): the prepare's selection, then every chunk of the run
in ONE process (`process_part`, one part: twice a task's chunks), on a thread of its own
(`run_on_fresh_thread`), then the end of the run (a send's delivery, the report). After the
selection, after every chunk and after each end step: VmRSS and VmHWM (/proc/self/status), and
with TRACE tracemalloc's current and peak; at the end the tracemalloc snapshot's growth between
the 5th chunk and the last, by traceback. Compare two volumes: the peak must not grow with N."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_DIR", str(Path(__file__).resolve().parent)))
from pipeline_bench import seed_demo_database

from postier.airflow.fresh_thread import run_on_fresh_thread
from postier.pipeline import runs
from postier.pipeline.context import Environment
from postier.store.cluster import LocalCluster

TRACE = bool(os.environ.get("TRACE"))
#: TRACE=end: tracemalloc only from the end of the chunks (the end steps' peaks, at full speed).
TRACE_END = os.environ.get("TRACE") == "end"


def status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    with open("/proc/self/status") as f:
        return {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in f)
            if k in ("VmRSS", "VmHWM")
        }


SNAPSHOTS: dict[str, tracemalloc.Snapshot] = {}


def mark(what: str) -> None:
    s = status()
    line = f"{what:<28} VmRSS {s['VmRSS'] / 1024:7.1f} MiB  VmHWM {s['VmHWM'] / 1024:7.1f} MiB"
    if TRACE:
        current, peak = tracemalloc.get_traced_memory()
        line += f"  traced {current / 2**20:6.1f} MiB, peak {peak / 2**20:6.1f} MiB"
        tracemalloc.reset_peak()
    print(line, flush=True)


def chunk_task(dsn: str, home: str, t: str, external: str) -> None:
    """One chunk task's work in this (fresh) process: the prepare's selection, every chunk, the
    end of the run."""
    env = Environment(dsn=dsn, home=Path(home), workers=2)
    if TRACE and not TRACE_END:
        tracemalloc.start(int(os.environ.get("FRAMES", "12")))
    mark(f"{t} start")
    chunks = [0]
    original = runs._process_chunk

    def chunk_then_mark(*args, **kwargs):
        original(*args, **kwargs)
        if os.environ.get("TRIM"):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        chunks[0] += 1
        mark(f"  chunk {chunks[0]} ({args[3]})")
        if TRACE and not TRACE_END and chunks[0] == 5:
            SNAPSHOTS["chunk 5"] = tracemalloc.take_snapshot()

    runs._process_chunk = chunk_then_mark
    runs.ensure_started(env, t, {}, "bench", external)
    mark(f"{t} selected")
    run_on_fresh_thread(lambda: runs.process_part(env, external, 0, 1), "chunks")
    if TRACE_END:
        tracemalloc.start(int(os.environ.get("FRAMES", "12")))
    mark(f"{t} chunks done")
    if TRACE and not TRACE_END:
        SNAPSHOTS["last chunk"] = tracemalloc.take_snapshot()
    if t == "factures_envoyer":
        from postier.pipeline.mailing import deliver_send

        deliver_send(env, external)
        mark(f"{t} delivered")
    from postier.pipeline.reports import write_report

    write_report(env, external, [], again=False)
    mark(f"{t} reported")
    if TRACE_END:
        no_imports = [tracemalloc.Filter(False, "<frozen importlib._bootstrap*>", all_frames=True)]
        top = tracemalloc.take_snapshot().filter_traces(no_imports).statistics("traceback")
        print(f"{t}: still traced at the end, imports left out, by traceback:")
        for stat in top[:8]:
            print(f"{stat.size / 1024:+9.1f} KiB {stat.count:+7d} blocks")
            for line in stat.traceback.format()[-10:]:
                print("    " + line)
    if TRACE and "chunk 5" in SNAPSHOTS:
        diff = SNAPSHOTS["last chunk"].compare_to(SNAPSHOTS["chunk 5"], "traceback")
        print("\nGrowth between the 5th chunk and the last, by traceback:")
        for stat in diff[:12]:
            print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            for line in stat.traceback.format()[-14:]:
                print("    " + line)


def main() -> None:
    if sys.argv[1] == "--task":
        chunk_task(*sys.argv[2:6])
        return
    n = int(sys.argv[1])
    base = Path(tempfile.mkdtemp(prefix="chunk-memory-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "pg")
    try:
        dsn = seed_demo_database(cluster, n)
        home = base / "home"
        for t in ("factures_preparer_envoi", "factures_envoyer"):
            external = f"memory/{t}/{time.time_ns()}"
            if t == "factures_envoyer":  # selected by the send's confirmation, another process
                env = Environment(dsn=dsn, home=home, workers=2)
                runs.ensure_started(env, t, {}, "bench", external)
            subprocess.run(
                [sys.executable, __file__, "--task", dsn, str(home), t, external], check=True
            )
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
