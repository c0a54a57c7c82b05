"""Where a prepare or send chunk's CPU goes, per invoice, without a profiler's distortion.

    .venv/bin/python bench/chunk_cpu.py 2000          # N demo invoices, chunks run in this process
    PARTS=1 .venv/bin/python bench/chunk_cpu.py 2000  # and the CPU of each step of the chunk
    STRACE=tag .venv/bin/python bench/chunk_cpu.py 500  # and `strace -c` of each chunk
    FRESH=1 .venv/bin/python bench/chunk_cpu.py 2000  # a new connection for each chunk
    TMPDIR=/work/bench-tmp .venv/bin/python bench/chunk_cpu.py 2000  # files away from /tmp's churn

On this machine's journal-less ext4 a new file costs 0.03 ms of system CPU in a quiet block group
and up to 0.4 ms in /tmp's, where the engineers' tests keep deleting files (`bench/file_cpu.py`):
a folder marked `chattr +T` for TMPDIR keeps the bench's run files and GED out of that churn.

The chunks of a run go through one connection, as a chunk task's do (`process_part`): a
backend's first statements (its caches cold, nothing prepared yet) are paid once per task, not
once per chunk. `FRESH=1` opens one per chunk (`process_chunk`), as this bench did before.

For each chunk of a prepare then a send run (`bench/pipeline_bench.py`'s demo database):
- this process's CPU (user, system: `getrusage`, to the microsecond where `os.times` counts
  10 ms ticks, 0.05 ms an invoice in a chunk of 200), the document step's (render_final_invoice and
  Signer.sign timed with `time.process_time`) and the rest, the chunk's own non-document work;
- PostgreSQL's CPU: /proc utime + stime of the throwaway cluster's postmaster, its children and
  the backends it already reaped (cutime + cstime);
- statements sent, and each statement's backend CPU (/proc/<pg_backend_pid>/schedstat around it).
Figures per invoice; compare ratios taken in the same run on a shared machine."""

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_DIR", str(Path(__file__).resolve().parent)))
import psycopg
from pipeline_bench import seed_demo_database
from process_cpu import tree_cpu

from postier.pipeline.context import Environment
from postier.pipeline.runs import Progress, _process_chunk, load_run, process_chunk, start_run
from postier.store.cluster import LocalCluster


def pg_cpu(datadir):
    """The postmaster's CPU with its backends', those it already reaped included."""
    return tree_cpu(int(Path(datadir, "postmaster.pid").read_text().split()[0]))


DOC = [0.0]


def wrap_documents():
    import postier.documents as d
    from postier.documents import signing

    orig_render = d.render_final_invoice

    def render(*a, **k):
        t = time.process_time()
        try:
            return orig_render(*a, **k)
        finally:
            DOC[0] += time.process_time() - t

    d.render_final_invoice = render
    orig_sign = signing.Signer.sign

    def sign(self, *a, **k):
        t = time.process_time()
        try:
            return orig_sign(self, *a, **k)
        finally:
            DOC[0] += time.process_time() - t

    signing.Signer.sign = sign


COUNT = {}
BACKEND = {}


def count_statements():
    orig_exec = psycopg.Cursor.execute
    orig_many = psycopg.Cursor.executemany

    def cexec(self, query, params=None, **kw):
        COUNT["execute"] = COUNT.get("execute", 0) + 1
        pid = self.connection.info.backend_pid

        def ns():
            with open(f"/proc/{pid}/schedstat") as f:
                return int(f.read().split()[0])

        before = ns()
        try:
            return orig_exec(self, query, params, **kw)
        finally:
            key = " ".join(
                str(query if isinstance(query, str) else query.as_string(self.connection)).split()
            )[:70]
            BACKEND[key] = BACKEND.get(key, 0) + ns() - before

    def many(self, query, seq, **kw):
        seq = list(seq)
        COUNT["executemany"] = COUNT.get("executemany", 0) + 1
        COUNT["executemany rows"] = COUNT.get("executemany rows", 0) + len(seq)
        return orig_many(self, query, seq, **kw)

    psycopg.Cursor.execute = cexec
    psycopg.Cursor.executemany = many
    if hasattr(psycopg.Cursor, "copy"):
        orig_copy = psycopg.Cursor.copy

        def copy(self, *a, **k):
            COUNT["copy"] = COUNT.get("copy", 0) + 1
            return orig_copy(self, *a, **k)

        psycopg.Cursor.copy = copy


PARTS = {}


def wrap_parts():
    import importlib

    # The steps both chunk handlers call, then each one's own.
    shared = [
        "load_invoices",
        "fingerprint",
        "sending_problems",
        "lock_for_transition",
        "stamp_transition",
        "record_outcomes",
        "zero_amount_note",
    ]
    targets = {
        "postier.pipeline.handlers": [*shared, "record_addresses"],
        "postier.pipeline.sending": [
            *shared,
            "recorded_addresses",
            "load_settings",
            "_channel_effects",
        ],
    }

    def timed(label, f):
        def w(*a, **k):
            t = time.process_time()
            try:
                return f(*a, **k)
            finally:
                PARTS[label] = PARTS.get(label, 0.0) + time.process_time() - t

        return w

    for mod, names in targets.items():
        m = importlib.import_module(mod)
        for n in names:
            if hasattr(m, n):
                setattr(m, n, timed(n, getattr(m, n)))
    from postier import storage
    from postier.delivery import archive
    from postier.pipeline import annuaire, sending

    storage.RunFolder.write = timed("RunFolder.write", storage.RunFolder.write)
    # The files themselves, however handed over (one by one, or a `WriteBatch`).
    storage.Storage.put = timed("Storage.put (files)", storage.Storage.put)
    if hasattr(archive.DocumentArchive, "add"):  # the GED copies, written a few at a time
        archive.DocumentArchive.add = timed("DocumentArchive.add", archive.DocumentArchive.add)
    archive.DocumentArchive.put = timed("DocumentArchive.put", archive.DocumentArchive.put)
    archive.DocumentArchive.sync = timed("DocumentArchive.sync", archive.DocumentArchive.sync)
    archive.DocumentArchive.key_for = staticmethod(
        timed("key_for", archive.DocumentArchive.key_for)
    )
    sending._ChunkWrites.flush = timed("_ChunkWrites.flush", sending._ChunkWrites.flush)
    annuaire.AddressResolver.resolve = timed(
        "AddressResolver.resolve", annuaire.AddressResolver.resolve
    )
    psycopg.Connection.commit = timed("commit", psycopg.Connection.commit)


def like_a_task_process():
    """What an Airflow task process starts with: the documents' per-process constants built
    (`postier.airflow.preload` renders a sample in the scheduler or Celery worker), and every
    object it inherits frozen out of the garbage collector's reach (the LocalExecutor forks its
    workers after `gc.freeze()`, Celery's pool after Airflow's): a chunk task's full collections
    scan only what it made itself (≈ 3,000 objects, 0.01 s of collections per chunk task at
    3,000 invoices). Not frozen, this process's 147,000 objects made one full collection of the
    send cost 66 ms (0.3 ms an invoice of its chunk 3), which the tasks never pay."""
    import gc
    from datetime import UTC, datetime

    from postier.documents import render_final_invoice
    from postier.documents.samples import sample_invoice, sample_seller

    render_final_invoice(sample_invoice(), sample_seller(), moment=datetime(2026, 1, 1, tzinfo=UTC))
    gc.freeze()


def main():
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    base = Path(tempfile.mkdtemp(prefix="chunkcpu-cpu-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "pg")
    try:
        dsn = seed_demo_database(cluster, N)
        datadir = str(cluster.data)
        env = Environment(dsn=dsn, home=base / "home", workers=2)
        wrap_documents()
        count_statements()
        if os.environ.get("PARTS"):
            wrap_parts()
        env.signer("x")
        like_a_task_process()
        for t in ("factures_preparer_envoi", "factures_envoyer"):
            summary = start_run(env, t, {}, "bench", f"cpu/{t}/{time.time_ns()}")
            run_id = summary["run_id"]
            # Carried from chunk to chunk, as a chunk task does.
            progress = Progress(run_id)
            work = None if os.environ.get("FRESH") else env.connect()
            run = None if work is None else load_run(work, run_id, env.storage)
            if work is not None:
                work.commit()  # read as `process_part` reads it: no transaction left open
            for chunk in summary["chunks"]:
                with psycopg.connect(dsn) as c:
                    n = c.execute(
                        "SELECT count(*) FROM run_items WHERE run_id=%s AND chunk=%s",
                        (run_id, chunk),
                    ).fetchone()[0]
                COUNT.clear()
                DOC[0] = 0.0
                BACKEND.clear()
                PARTS.clear()
                tracer = None
                if os.environ.get("STRACE"):
                    import signal
                    import subprocess

                    out = f"strace-{os.environ['STRACE']}-{t}-{chunk}.txt"
                    tracer = subprocess.Popen(
                        ["strace"]
                        + (["-e", "trace=openat,read"] if os.environ.get("STRACE_FULL") else ["-c"])
                        + ["-o", out, "-p", str(os.getpid())]
                    )
                    time.sleep(1.0)
                pg0 = pg_cpu(datadir)
                t0 = resource.getrusage(resource.RUSAGE_SELF)
                w0 = time.perf_counter()
                if work is None:
                    process_chunk(env, run_id, chunk, progress)
                else:
                    _process_chunk(env, work, run, chunk, progress)
                if tracer is not None:
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait()
                t1 = resource.getrusage(resource.RUSAGE_SELF)
                pg = pg_cpu(datadir) - pg0
                wall = time.perf_counter() - w0
                user, sys_ = t1.ru_utime - t0.ru_utime, t1.ru_stime - t0.ru_stime
                k = 1000 / n
                cpu = user + sys_
                print(
                    f"{t} chunk {chunk} ({n} inv): cpu {cpu * k:.2f} ms/inv "
                    f"(user {user * k:.2f}, sys {sys_ * k:.2f}); document {DOC[0] * k:.2f}; "
                    f"non-document {(cpu - DOC[0]) * k:.2f} ({(cpu - DOC[0]) / cpu:.1%}); "
                    f"postgres {pg * k:.2f}; wall {wall * k:.2f}; {COUNT}",
                    flush=True,
                )
                for q, v in sorted(PARTS.items(), key=lambda x: -x[1]):
                    print(f"      python {v * 1000 / n:.3f} ms/inv  {q}")
                for q, v in sorted(BACKEND.items(), key=lambda x: -x[1]):
                    print(f"      backend {v / 1e6 / n:.3f} ms/inv  {q}")
            if work is not None:
                work.close()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
