"""The Airflow bench reads the document step's CPU, a send's delivery time and a run's selection
time from the log lines the code writes."""

from __future__ import annotations

import sys
from pathlib import Path

from postier.pipeline.runs import CHUNK_LOG

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import CHUNK_WORK  # noqa: E402


def test_the_bench_parses_the_chunk_lines_document_cpu() -> None:
    line = CHUNK_LOG % (3, 220, 2.5, 1.875, 440, 1000, 2.2, 0.3, 0.1, 0.05, 0.04, 0.11)
    assert CHUNK_WORK.findall(f"[2026-12-06] INFO - {line}\n") == [("220", "2.50", "1.88")]


def test_the_bench_parses_the_chunk_lines_waits() -> None:
    from airflow_bench import CHUNK_WAITS

    line = CHUNK_LOG % (3, 220, 2.5, 1.875, 440, 1000, 2.2, 0.3, 0.1, 0.05, 0.04, 0.11)
    assert CHUNK_WAITS.findall(f"[2026-12-06] INFO - {line}\n") == [
        ("2.200", "0.300", "0.100", "0.050", "0.040", "0.110")
    ]


def test_the_bench_parses_the_sends_delivery_line() -> None:
    from airflow_bench import DELIVERY

    from postier.pipeline.mailing import DELIVERY_LOG

    line = DELIVERY_LOG % 1.234
    assert DELIVERY.findall(f"[2026-12-06] INFO - {line}\n") == ["1.23"]


def test_the_bench_parses_the_runs_selection_line() -> None:
    from airflow_bench import SELECTION

    from postier.airflow.dag_factory import SELECTION_LOG

    line = SELECTION_LOG % 0.456
    assert SELECTION.findall(f"[2026-12-06] INFO - {line}\n") == ["0.46"]


def test_the_bench_counts_the_machines_busy_cpu_with_what_this_process_burns() -> None:
    import os
    import time

    from airflow_bench import MACHINE_BUSY, MACHINE_IOWAIT, machine_cpu

    before, started, cpu = machine_cpu(), time.monotonic(), time.process_time()
    while time.process_time() - cpu < 0.3:
        pass
    after, elapsed = machine_cpu(), time.monotonic() - started
    busy = after[MACHINE_BUSY] - before[MACHINE_BUSY]
    assert 0.25 <= busy <= elapsed * (os.cpu_count() or 1) + 0.05
    assert after[MACHINE_IOWAIT] >= before[MACHINE_IOWAIT]
