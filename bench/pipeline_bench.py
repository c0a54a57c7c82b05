"""Benchmark of the pipeline: demo invoices through prepare + send, against the document step.

    .venv/bin/python bench/pipeline_bench.py --invoices 10000 --workers 2

In the same run, on a throwaway PostgreSQL cluster seeded with demo data:
- the document-step throughput on one core (`DocumentBaseline`: final Factur-X render, then
  render + signature with the key loaded once), on 200 of the invoices the runs process, in this
  process's CPU time: 2 samples of ≈ 2 s of CPU per rate before the runs and 2 after, the median
  kept, every sample printed (`bench/airflow_bench.py` takes 3 + 3);
- prepare then send of every invoice through `postier.pipeline` (start → chunk tasks on `workers`
  processes → finalize → report), as the DAG tasks do, without Airflow's own task start-up;
- the orchestration overhead share: 1 − pipeline throughput / (document throughput × workers)
  (the send step renders and signs, prepare renders: both are counted as document work), and
  the same share at the slowest and the fastest baseline sample;
- the peak memory (VmHWM) of a chunk worker, for two volumes: it must not grow with N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from process_cpu import CLOCK_TICKS

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


#: A one-core rate sample lasts at least this many CPU seconds (whole passes over the invoices).
SAMPLE_SECONDS = 2.0
#: Rate samples taken each time the baseline is measured (before the runs, then after them).
SAMPLES = 3


def _machine_busy() -> tuple[float, float]:
    """(seconds the machine's cores were busy, this process's CPU seconds) so far, from
    /proc/stat and `os.times`: their differences over a sample give the other processes' load."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    times = os.times()
    return busy / CLOCK_TICKS, times.user + times.system


@dataclass
class RateSample:
    """One measurement of both one-core rates (documents per CPU second of this process)."""

    when: str
    render: float
    send: float
    #: CPU seconds the sample took (both rates).
    cpu_s: float
    #: Cores the machine's other processes kept busy on average meanwhile.
    others: float


@dataclass
class DocumentBaseline:
    """The document step's one-core rates: final Factur-X render (what a prepare chunk does per
    invoice) and render + PAdES signature (a send chunk), on a sample of the invoices the run
    will process, measured in this process's CPU time, several samples at several moments.

    The median of the samples is the rate the bench divides by: a sample that ran while
    something else disturbed this process (PostgreSQL's autovacuum after the seeding, a page
    cache flush, another program) moves it less than it moves the mean, and unlike the fastest
    or the slowest sample it does not pick the machine's best or worst moment, which the chunks
    do not get either."""

    invoices: list[Any]
    seller: Any
    signer: Any
    samples: list[RateSample] = field(default_factory=list)

    @classmethod
    def load(cls, env: Environment, sample: int = 200) -> DocumentBaseline:
        """Up to `sample` invoices spread evenly over those a prepare then a send will render
        (waiting, no sending problem), loaded before the runs change their state."""
        from postier.domain.validation import sending_problems

        with psycopg.connect(env.dsn) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n, "
                    "count(*) OVER () AS total FROM invoices WHERE send_state = 'EN_ATTENTE') s "
                    "WHERE n %% greatest(total / %s, 1) = 0 ORDER BY id",
                    (2 * sample,),
                )
            ]
            invoices = [i for i in load_invoices(conn, ids) if not sending_problems(i)]
            seller = load_settings(conn).seller()
        # `sample` of them at even intervals over all: a whole step (len // sample) kept only the
        # first half when fewer than twice `sample` were left (positions 0-796 of 1,533 at 2,000).
        n = len(invoices)
        chosen = invoices if n <= sample else [invoices[i * n // sample] for i in range(sample)]
        baseline = cls(chosen, seller, env.signer(seller.name))
        baseline._documents(baseline.invoices[:5], sign=True)  # fonts, XSD, key: built once
        return baseline

    def _documents(self, invoices: list[Any], sign: bool) -> None:
        """The documents as a chunk makes them: their Factur-X XML first, in one pass."""
        from postier.documents import render_final_invoice
        from postier.pipeline.runs import facturx_first

        refused: list[Any] = []
        cii = facturx_first(invoices, self.seller, refused)
        assert not refused, refused
        for invoice in invoices:
            pdf = render_final_invoice(invoice, self.seller, xml=cii[invoice.id])
            if sign:
                self.signer.sign(pdf)

    def _rate(self, sign: bool, seconds: float) -> tuple[float, float]:
        """(documents per CPU second of this process, CPU seconds): whole passes over the
        invoices, as many as bring the CPU time nearest to `seconds`."""
        passes, start = 0, time.process_time()
        while True:
            self._documents(self.invoices, sign)
            passes += 1
            spent = time.process_time() - start
            # Stop at the pass count closest to `seconds`.
            if spent + spent / passes / 2 >= seconds:
                return passes * len(self.invoices) / spent, spent

    def measure(self, when: str, samples: int = SAMPLES, seconds: float = SAMPLE_SECONDS) -> None:
        """Take `samples` samples of both rates, render then render + sign in turn."""
        for _ in range(samples):
            busy, own = _machine_busy()
            started = time.monotonic()
            render, render_s = self._rate(False, seconds)
            send, send_s = self._rate(True, seconds)
            busy_after, own_after = _machine_busy()
            others = (busy_after - busy - (own_after - own)) / (time.monotonic() - started)
            self.samples.append(RateSample(when, render, send, render_s + send_s, max(0.0, others)))

    @property
    def render_rate(self) -> float:
        return statistics.median(s.render for s in self.samples)

    @property
    def send_rate(self) -> float:
        return statistics.median(s.send for s in self.samples)

    def document_s(self, prepared: int, sent: int, pick: Any = statistics.median) -> float:
        """One core's seconds of document work for `prepared` renders and `sent` renders +
        signatures, at the rates `pick` chooses among the samples (median, min, max)."""
        render = pick([s.render for s in self.samples])
        send = pick([s.send for s in self.samples])
        return prepared / render + sent / send

    def cpu_s(self) -> float:
        """CPU seconds all the samples took."""
        return sum(s.cpu_s for s in self.samples)

    def spread(self) -> tuple[float, float]:
        """(render, render + sign): fastest sample / slowest."""
        render = [s.render for s in self.samples]
        send = [s.send for s in self.samples]
        return max(render) / min(render), max(send) / min(send)

    def print(self, what: str = "") -> None:
        """Every sample, the median the bench uses and the spread, as a table."""
        print(
            f"\nDébits de référence{what}, 1 cœur (CPU de ce processus), {len(self.invoices)} "
            f"des factures traitées, {self.cpu_s():.0f} s de CPU en tout"
        )
        print(
            "| échantillon | moment | rendu Factur-X (doc/s) | rendu + signature (doc/s) | "
            "autres processus (cœurs) |\n|---|---|---:|---:|---:|"
        )
        for number, s in enumerate(self.samples, 1):
            print(f"| {number} | {s.when} | {s.render:.1f} | {s.send:.1f} | {s.others:.2f} |")
        render_spread, send_spread = self.spread()
        print(f"| **médiane (retenue)** | | {self.render_rate:.1f} | {self.send_rate:.1f} | |")
        print(
            f"| écart, plus rapide / plus lent | | {render_spread:.3f} × | {send_spread:.3f} × | |"
        )


def bench_cluster(base: Path) -> LocalCluster:
    """The benches' throwaway PostgreSQL cluster under `base`: its commits made durable as a
    production server's (the tests' clusters skip `fsync` and full-page writes)."""
    return LocalCluster(base / "pg", durable=True)


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
    cluster = bench_cluster(base)
    try:
        dsn = seed_demo_database(cluster, invoices)
        with psycopg.connect(dsn) as conn:
            todo = conn.execute(
                "SELECT count(*) FROM invoices WHERE send_state = 'EN_ATTENTE'"
            ).fetchone()
        env = Environment(dsn=dsn, home=base / "home", workers=workers)
        baseline = DocumentBaseline.load(env)
        # Two samples before the runs and two after: this bench measures two volumes.
        baseline.measure("avant", samples=2)
        prep_s, prepared, prep_rss = run_treatment(env, "factures_preparer_envoi", workers)
        send_s, sent, send_rss = run_treatment(env, "factures_envoyer", workers)
        baseline.measure("après", samples=2)
        baseline.print(f", N = {invoices}")
        # Ideal: every worker does nothing but document work.
        ideal_s = baseline.document_s(prepared, sent) / workers
        return {
            "invoices": invoices,
            "todo": float(todo[0]) if todo else 0.0,
            "render_rate": baseline.render_rate,
            "send_rate": baseline.send_rate,
            "prep_s": prep_s,
            "send_s": send_s,
            "prepared": prepared,
            "sent": sent,
            "ideal_s": ideal_s,
            "overhead": 1 - ideal_s / (prep_s + send_s),
            # The same share were the slowest (min) or fastest (max) samples the baseline.
            "overhead_slow": 1
            - baseline.document_s(prepared, sent, min) / workers / (prep_s + send_s),
            "overhead_fast": 1
            - baseline.document_s(prepared, sent, max) / workers / (prep_s + send_s),
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
    print(
        "\nPart d'orchestration selon l'échantillon de référence : "
        + " ; ".join(
            f"N = {v['invoices']:.0f} : {v['overhead']:.1%} (médiane), {v['overhead_slow']:.1%} "
            f"(le plus lent), {v['overhead_fast']:.1%} (le plus rapide)"
            for v in (small, big)
        )
    )
    throughput = (big["prepared"] + big["sent"]) / (big["prep_s"] + big["send_s"])
    print(f"\nDébit : {throughput:.1f} factures/s (préparation + envoi), N = {args.invoices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
