"""Chunk sizing (short chunks, one task per worker), the order a task takes them, and who a run is
stamped with."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from postier.airflow.runtime import TECHNICAL_LOGIN, actor
from postier.pipeline.runs import share_order
from postier.store import runs as run_store
from postier.store.runs import (
    CHUNK_S,
    INVOICE_S,
    MIN_CHUNK,
    MIN_QUARTER_CHUNK,
    chunk_count_for,
    chunk_weights,
)


@pytest.mark.parametrize("count", [1, 99, 100, 150, 2_000, 10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_chunks_are_a_couple_of_seconds_of_work_and_every_worker_has_one(
    count: int, workers: int
) -> None:
    chunks = chunk_count_for(count, workers)
    # Invoices per chunk, as many as the run's are alike (tests/integration/test_run_chunks.py
    # cuts real selections): short enough that the chunk tasks end within a chunk of each
    # other, whatever N.
    weights = chunk_weights(count, workers)
    assert len(weights) == chunks
    size = math.ceil(count / sum(weights))  # a whole chunk's; the last ones a half, a quarter
    assert size * INVOICE_S <= max(CHUNK_S, MIN_CHUNK * INVOICE_S) * 1.01
    assert size >= MIN_CHUNK or chunks <= workers
    if count >= MIN_CHUNK * workers:
        assert chunks >= workers  # every worker busy
    # A run maps one chunk task per worker slot (`chunk_task_count`): each task that has a share
    # starts on a chunk of its own.
    sharing = min(workers, chunks)
    assert len({share_order(range(chunks), part, workers)[0] for part in range(sharing)}) == sharing


def test_ten_thousand_invoices_make_many_short_chunks_for_two_tasks() -> None:
    # The tasks take the chunks in turn: 44 chunks of ≈ 2 s, then 2 of ≈ 1 s and 2 of ≈ 0.5 s,
    # for the 2 mapped tasks (was 10 tasks of one chunk each, ≈ 1 s of task cost per chunk).
    assert chunk_count_for(10_000, 2) == 48
    assert chunk_count_for(0, 2) == 0


def test_a_task_takes_its_own_share_first_then_the_others_from_the_last() -> None:
    chunks = list(range(7))
    assert share_order(chunks, 0, 2) == [0, 2, 4, 6, 5, 3, 1]
    assert share_order(chunks, 1, 2) == [1, 3, 5, 6, 4, 2, 0]
    # Every task may reach every chunk: none is left if a task never runs.
    for part in range(3):
        assert sorted(share_order(chunks, part, 3)) == chunks
    # Chunks already done are not in the list it gets.
    assert share_order([3, 5, 6], 1, 2) == [3, 5, 6]


@pytest.mark.parametrize(("count", "workers"), [(450, 2), (10_000, 2), (30_000, 2), (10_000, 3)])
def test_a_run_ends_on_small_chunks_each_task_taking_a_half_then_a_quarter_last(
    count: int, workers: int
) -> None:
    # The tasks end within a quarter chunk of each other, not a whole one: each task's own share
    # ends on a half chunk then a quarter chunk, and a task that has finished its share takes
    # up the others' from their quarter chunks.
    weights = chunk_weights(count, workers)
    tail = 2 * workers
    assert weights[-tail:] == [0.5] * workers + [0.25] * workers
    assert set(weights[:-tail]) == {1.0}
    # One chunk more per worker than chunks all alike would be (no more than that).
    assert len(weights) == math.ceil(count / round(CHUNK_S / INVOICE_S)) + workers
    parts = workers  # one chunk task per worker slot, each with a share (more chunks than tasks)
    chunks = list(range(len(weights)))
    for part in range(parts):
        own = [c for c in share_order(chunks, part, parts) if c % parts == part]
        assert [weights[c] for c in own[-2:]] == [0.5, 0.25]
        others = [c for c in share_order(chunks, part, parts) if c % parts != part]
        assert weights[others[0]] == 0.25


@pytest.mark.parametrize(("count", "workers"), [(1, 2), (150, 2), (200, 2), (10_000, 1)])
def test_a_run_of_a_chunk_per_task_or_of_one_task_has_no_small_chunks(
    count: int, workers: int
) -> None:
    assert set(chunk_weights(count, workers)) == {1.0}


@pytest.mark.parametrize("workers", [2, 3])
def test_a_quarter_chunk_is_never_cut_under_its_floor_even_with_tiny_chunks(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Chunks of 8 invoices and no MIN_CHUNK, as tests lower them to cut tiny runs: a run gets
    # its half and quarter chunks only where a quarter chunk holds MIN_QUARTER_CHUNK invoices.
    monkeypatch.setattr(run_store, "MIN_CHUNK", 1)
    monkeypatch.setattr(run_store, "CHUNK_S", 8 * INVOICE_S)
    tails = 0
    for count in range(1, 80):
        weights = chunk_weights(count, workers)
        if 0.25 in weights:
            tails += 1
            assert count * 0.25 / sum(weights) >= MIN_QUARTER_CHUNK, count
    assert tails > 0  # and some do


def test_a_clerk_run_is_stamped_with_the_triggering_user() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name="jmartin", run_type="manual")}
    assert actor(context) == "jmartin"


def test_a_scheduled_run_is_stamped_with_the_technical_login() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name=None, run_type="scheduled")}
    assert actor(context) == TECHNICAL_LOGIN == "traitement-nocturne"
