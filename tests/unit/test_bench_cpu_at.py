"""The Airflow bench's CPU account at an instant Airflow recorded, between two polls."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import cpu_at  # noqa: E402

SAMPLES = [
    (100.0, {"scheduler": 1.0, "tâches": 10.0}),
    (100.5, {"scheduler": 1.2, "tâches": 11.0}),
    (101.0, {"scheduler": 1.2, "tâches": 11.0, "api-server": 0.4}),
]


def test_the_account_between_two_polls_is_interpolated_at_the_recorded_instant() -> None:
    assert cpu_at(SAMPLES, 100.125) == {
        "scheduler": pytest.approx(1.05),
        "tâches": pytest.approx(10.25),
    }
    # A component first seen at the later sample counts from zero.
    assert cpu_at(SAMPLES, 100.75)["api-server"] == pytest.approx(0.2)


def test_an_instant_outside_the_samples_takes_the_nearest_one() -> None:
    assert cpu_at(SAMPLES, 99.0) == SAMPLES[0][1]
    assert cpu_at(SAMPLES, 102.0) == SAMPLES[-1][1]
    assert cpu_at(SAMPLES, 100.5) == SAMPLES[1][1]
