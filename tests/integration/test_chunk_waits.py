"""A chunk's log line says where its time went: its thread's CPU, and its waits (for a core, for
its files' sync, for its commit, for the rest), which the Airflow bench sums per run."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from builders import insert_invoice

from postier import storage as storage_module
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run

LINE = re.compile(
    r"Paquet 0 : 3 facture\(s\) traitée\(s\) en ([0-9.]+) s, .* CPU du paquet ([0-9.]+) s, "
    r"attentes ([0-9.]+) s : d'un cœur ([0-9.]+) s, mise en sûreté des fichiers ([0-9.]+) s, "
    r"validation ([0-9.]+) s, requêtes et autres ([0-9.]+) s"
)
#: How long each GED sync is made to take (a slow disk), so that the line must show it.
SLOW_SYNC_S = 0.2


def _send_started(postier_env: str, tmp_path: Path, prefix: str) -> tuple[Environment, int, int]:
    """Three ready invoices and a send started on them: its environment, run and one chunk."""
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"{prefix}-{n}", send_state="PRET")
    env = Environment(dsn=postier_env, home=tmp_path / "home")
    summary = start_run(env, "factures_envoyer", {}, "jmartin", f"test/{prefix}")
    return env, summary["run_id"], summary["chunks"][0]


def _chunk_line(caplog: pytest.LogCaptureFixture) -> tuple[float, ...]:
    """The one chunk's line: wall, CPU, waits, and its waits for a core, sync, commit, rest."""
    found = [m for r in caplog.records if (m := LINE.search(r.getMessage()))]
    assert len(found) == 1, caplog.text
    return tuple(float(v) for v in found[0].groups())


def test_a_send_chunks_line_counts_its_ged_sync_as_a_wait_apart_from_its_cpu(
    postier_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_syncfs = storage_module._syncfs

    def slow_syncfs(fd: int) -> None:
        time.sleep(SLOW_SYNC_S)  # a disk slow to write back: waited for, no CPU spent
        real_syncfs(fd)

    monkeypatch.setattr(storage_module, "_syncfs", slow_syncfs)
    env, run_id, chunk = _send_started(postier_env, tmp_path, "CW")
    with caplog.at_level(logging.INFO, logger="postier.pipeline.runs"):
        process_chunk(env, run_id, chunk)

    wall, cpu, waits, core, sync, commit, rest = _chunk_line(caplog)
    assert sync >= SLOW_SYNC_S  # the chunk's own sync, before its commit
    assert cpu < wall - SLOW_SYNC_S + 0.01  # the sleep is not CPU
    assert waits == pytest.approx(wall - cpu, abs=0.011)
    assert core + sync + commit + rest == pytest.approx(waits, abs=0.011)
    with psycopg.connect(postier_env) as conn:
        sent = conn.execute("SELECT count(*) FROM invoices WHERE send_state = 'ENVOYE'").fetchone()
    assert sent == (3,)


#: The CPU the chunk's own sync spends (a filesystem busy in the kernel), on a shared core.
SPIN_CPU_S = 0.3


@contextmanager
def a_busy_core() -> Iterator[int]:
    """A core that a busy process keeps running for the block: a thread put on it waits for
    it, runnable, about as long as it runs."""
    cpu = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        yield cpu
    finally:
        hog.kill()
        hog.wait()


def test_a_chunks_waits_count_each_second_once_with_a_sync_that_runs_and_waits_for_a_core(
    postier_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The chunk's sync is blocked 0.2 s, then runs 0.3 s of CPU on a busy core: the sync's
    # wall time counted its CPU, and its wait for the core counted again in « d'un cœur »;
    # the rest, below 0, was shown as 0, and the waits added up to more than they were.
    real_syncfs = storage_module._syncfs
    chunk_thread = threading.get_ident()
    busy_cpu = -1

    def busy_syncfs(fd: int) -> None:
        if threading.get_ident() == chunk_thread:  # not the background write-back's
            time.sleep(SLOW_SYNC_S)
            mask = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {busy_cpu})  # 0: this thread
            try:
                spun = time.thread_time()
                while time.thread_time() - spun < SPIN_CPU_S:
                    pass
            finally:
                os.sched_setaffinity(0, mask)
        real_syncfs(fd)

    monkeypatch.setattr(storage_module, "_syncfs", busy_syncfs)
    env, run_id, chunk = _send_started(postier_env, tmp_path, "CB")
    with caplog.at_level(logging.INFO, logger="postier.pipeline.runs"), a_busy_core() as cpu:
        busy_cpu = cpu
        process_chunk(env, run_id, chunk)

    wall, cpu, waits, core, sync, commit, rest = _chunk_line(caplog)
    assert cpu >= SPIN_CPU_S
    assert core >= SPIN_CPU_S / 3  # the sync's wait for the core, counted there only
    assert sync >= SLOW_SYNC_S  # blocked, apart from its CPU and its wait for the core
    assert waits == pytest.approx(wall - cpu, abs=0.011)
    assert core + sync + commit + rest == pytest.approx(waits, abs=0.011)
