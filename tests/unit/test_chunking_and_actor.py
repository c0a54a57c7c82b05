"""Chunk sizing (parallel enough, never too many mapped tasks) and who a run is stamped with."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from postier.airflow.runtime import TECHNICAL_LOGIN, actor
from postier.store.runs import (
    INVOICE_S,
    MAX_CHUNKS,
    MAX_ROUNDS,
    OVERHEAD_SHARE,
    TASK_OVERHEAD_S,
    chunk_count_for,
)


@pytest.mark.parametrize("count", [1, 99, 100, 150, 2_000, 10_000, 100_000, 1_000_000, 5_000_000])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_chunks_keep_workers_busy_and_stay_under_the_map_limit(count: int, workers: int) -> None:
    chunks = chunk_count_for(count, workers, overhead_s=TASK_OVERHEAD_S)
    size = math.ceil(count / chunks)
    assert chunks <= MAX_CHUNKS
    assert size >= 100 or chunks <= workers
    if count >= 100 * workers:
        assert chunks >= workers  # every worker busy
    if chunks > workers:
        # No last round that one slot runs while the others idle.
        assert chunks % workers == 0
    assert chunks <= MAX_ROUNDS * workers or count > MAX_ROUNDS * workers * 2000
    # The measured cost of a mapped task stays under its share of the chunk's work, unless the
    # run is too small to give each worker such a chunk.
    if TASK_OVERHEAD_S > OVERHEAD_SHARE * size * INVOICE_S:
        assert chunks <= workers
    if size > 2000:
        assert chunks > MAX_CHUNKS - workers  # only to respect the limit


def test_the_measured_task_overhead_sets_the_chunk_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10,000 invoices on 2 workers: a cheap task allows four rounds, a dear one fewer, bigger.
    assert chunk_count_for(10_000, 2, overhead_s=0.5) == 8
    assert chunk_count_for(10_000, 2, overhead_s=2.5) == 6
    monkeypatch.setenv("POSTIER_TASK_OVERHEAD_SECONDS", "0.5")
    assert chunk_count_for(10_000, 2) == chunk_count_for(10_000, 2, overhead_s=0.5)


def test_more_chunks_than_workers_are_a_multiple_of_the_workers() -> None:
    # 3 workers at the map limit: 1,023 chunks, not 1,024 (one slot would run the last alone).
    assert chunk_count_for(5_000_000, 3) == 1_023
    assert chunk_count_for(5_000_000, 8) == 1_024


def test_a_clerk_run_is_stamped_with_the_triggering_user() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name="jmartin", run_type="manual")}
    assert actor(context) == "jmartin"


def test_a_scheduled_run_is_stamped_with_the_technical_login() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name=None, run_type="scheduled")}
    assert actor(context) == TECHNICAL_LOGIN == "traitement-nocturne"
