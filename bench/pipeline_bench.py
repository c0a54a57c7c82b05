"""Benchmark of the pipeline: demo invoices through prepare + send, against the document step.

    .venv/bin/python bench/pipeline_bench.py --invoices 10000 --workers 2

In the same run, on a throwaway PostgreSQL cluster seeded with demo data:
- the document-step throughput on one core (final Factur-X render + signature, key loaded once),
  measured on a sample of the same invoices;
- prepare then send of every invoice through `postier.pipeline` (start → chunk tasks on `workers`
  processes → finalize → report), as the DAG tasks do, without Airflow's own task start-up;
- the orchestration overhead share: 1 − pipeline throughput / (document throughput × workers)
  (the send step renders and signs, prepare renders: both are counted as document work);
- the peak memory (VmHWM) of a chunk worker, for two volumes: it must not grow with N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg

from postier import demo_data
from postier.pipeline.context import Environment
from postier.pipeline.reports import finalize, write_report
from postier.pipeline.runs import process_part, start_run
from postier.store.cluster import LocalCluster
from postier.store.invoices import load_invoices
from postier.store.migrations import migrate
from postier.store.settings import load_settings


def _part(args: tuple[Environment, int, dict[str, int]]) -> int:
    env, run_id, part = args
    process_part(env, run_id, part["part"], part["parts"])
    with open("/proc/self/status") as status:  # VmHWM: this worker's own peak, in KiB
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1])


def run_treatment(env: Environment, treatment: str, workers: int) -> tuple[float, int, int]:
    """Seconds, invoices processed, peak chunk-worker RSS (KiB)."""
    started = time.perf_counter()
    external = f"bench/{treatment}/{time.time_ns()}"
    summary = start_run(env, treatment, {}, "bench", external)
    # Fresh interpreters, like Airflow's task processes (not forks of this one).
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        peaks = list(pool.map(_part, [(env, summary["run_id"], p) for p in summary["parts"]]))
    files = finalize(env, external)
    report = write_report(env, external, files)
    return time.perf_counter() - started, report["compteurs"]["traitees"], max(peaks, default=0)


def document_rate(env: Environment, sample: int) -> tuple[float, float]:
    """(prepare-like, send-like) documents per second on one core, on demo invoices."""
    from postier.documents import render_final_invoice

    with psycopg.connect(env.dsn) as conn:
        ids = [
            r[0] for r in conn.execute("SELECT id FROM invoices ORDER BY id LIMIT %s", (sample,))
        ]
        invoices = load_invoices(conn, ids)
        seller = load_settings(conn).seller()
    signer = env.signer(seller.name)
    render_final_invoice(invoices[0], seller)
    start = time.perf_counter()
    for inv in invoices:
        render_final_invoice(inv, seller)
    render_rate = len(invoices) / (time.perf_counter() - start)
    start = time.perf_counter()
    for inv in invoices:
        signer.sign(render_final_invoice(inv, seller))
    return render_rate, len(invoices) / (time.perf_counter() - start)


def seed_demo_database(cluster: LocalCluster, invoices: int) -> str:
    """Start `cluster`, migrate it and seed `invoices` demo invoices, every one not yet sent
    waiting for prepare then send; the application DSN."""
    dsn = cluster.start()
    with psycopg.connect(cluster.owner_dsn()) as conn:
        migrate(conn)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE settings SET value = 'false' WHERE key = 'DEMAT_ARTIS'")
        demo_data.seed(conn, invoices, seed=3)
        # No Plateforme Agréée here: its customers get their invoices on paper.
        conn.execute("UPDATE customers SET channel = 'papier' WHERE channel = 'plateforme'")
        conn.execute("UPDATE invoices SET send_state = 'EN_ATTENTE' WHERE send_state <> 'ENVOYE'")
    return dsn


def one_volume(invoices: int, workers: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="postier-bench-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "pg")
    try:
        dsn = seed_demo_database(cluster, invoices)
        with psycopg.connect(dsn) as conn:
            todo = conn.execute(
                "SELECT count(*) FROM invoices WHERE send_state = 'EN_ATTENTE'"
            ).fetchone()
        env = Environment(dsn=dsn, home=base / "home", workers=workers)
        render_rate, send_rate = document_rate(env, 200)
        prep_s, prepared, prep_rss = run_treatment(env, "factures_preparer_envoi", workers)
        send_s, sent, send_rss = run_treatment(env, "factures_envoyer", workers)
        # Ideal: every worker does nothing but document work.
        ideal_s = prepared / (render_rate * workers) + sent / (send_rate * workers)
        return {
            "invoices": invoices,
            "todo": float(todo[0]) if todo else 0.0,
            "render_rate": render_rate,
            "send_rate": send_rate,
            "prep_s": prep_s,
            "send_s": send_s,
            "prepared": prepared,
            "sent": sent,
            "ideal_s": ideal_s,
            "overhead": 1 - ideal_s / (prep_s + send_s),
            "rss_mib": max(prep_rss, send_rss) / 1024,
        }
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    small = one_volume(max(500, args.invoices // 4), args.workers)
    big = one_volume(args.invoices, args.workers)
    print(f"\nPipeline prepare + send, {args.workers} worker(s)")
    print(f"| mesure | N = {small['invoices']:.0f} | N = {big['invoices']:.0f} |")
    print("|---|---:|---:|")
    for label, key, fmt in (
        ("documents/s, 1 cœur (rendu Factur-X)", "render_rate", "{:.1f}"),
        ("documents/s, 1 cœur (rendu + signature)", "send_rate", "{:.1f}"),
        ("préparées", "prepared", "{:.0f}"),
        ("envoyées", "sent", "{:.0f}"),
        ("durée préparation (s)", "prep_s", "{:.1f}"),
        ("durée envoi (s)", "send_s", "{:.1f}"),
        ("durée idéale = travail documentaire / workers (s)", "ideal_s", "{:.1f}"),
        ("part d'orchestration (cible ≤ 25 %)", "overhead", "{:.0%}"),
        ("mémoire max d'un lot (Mio)", "rss_mib", "{:.0f}"),
    ):
        print(f"| {label} | {fmt.format(small[key])} | {fmt.format(big[key])} |")
    throughput = (big["prepared"] + big["sent"]) / (big["prep_s"] + big["send_s"])
    print(f"\nDébit : {throughput:.1f} factures/s (préparation + envoi), N = {args.invoices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
