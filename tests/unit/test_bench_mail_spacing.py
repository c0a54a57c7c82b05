"""The Airflow bench's e-mail phase finds the two e-mails received closest together."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import closest_arrivals_ms  # noqa: E402


def test_the_bench_finds_the_closest_two_arrivals_in_any_order() -> None:
    received = [SimpleNamespace(at=at) for at in (10.0, 10.25, 10.1, 10.4)]
    assert math.isclose(closest_arrivals_ms(received), 100.0)


def test_one_arrival_is_never_too_close() -> None:
    assert closest_arrivals_ms([SimpleNamespace(at=3.0)]) == math.inf
