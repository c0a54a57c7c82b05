"""Chunk sizing (parallel enough, never too many mapped tasks) and who a run is stamped with."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from postier.airflow.runtime import TECHNICAL_LOGIN, actor
from postier.store.runs import MAX_CHUNKS, chunk_size_for


@pytest.mark.parametrize("count", [1, 99, 100, 2_000, 10_000, 100_000, 1_000_000, 5_000_000])
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_chunks_keep_workers_busy_and_stay_under_the_map_limit(count: int, workers: int) -> None:
    size = chunk_size_for(count, workers)
    chunks = math.ceil(count / size)
    assert chunks <= MAX_CHUNKS
    assert size >= 100  # a mapped task's start-up (about a second) stays small against its work
    if count >= 100 * workers * 4 and size < 2000:
        assert chunks >= workers * 4 - 1  # about four rounds per worker
    if size > 2000:
        assert chunks == MAX_CHUNKS or chunks == MAX_CHUNKS - 1  # only to respect the limit


def test_a_clerk_run_is_stamped_with_the_triggering_user() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name="jmartin", run_type="manual")}
    assert actor(context) == "jmartin"


def test_a_scheduled_run_is_stamped_with_the_technical_login() -> None:
    context = {"dag_run": SimpleNamespace(triggering_user_name=None, run_type="scheduled")}
    assert actor(context) == TECHNICAL_LOGIN == "traitement-nocturne"
