"""The deployment's numeric settings read from the environment (`postier.env_settings`): each
read in one place, a bad value refused in French naming the variable."""

from __future__ import annotations

import pytest

from postier import env_settings
from postier.airflow.dag_factory import chunk_task_count
from postier.airflow.runtime import environment
from postier.errors import ConfigurationError


def set_or_unset(monkeypatch: pytest.MonkeyPatch, name: str, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("value", "workers"), [(None, 4), ("", 4), ("3", 3), (" 1 ", 1)])
def test_the_dags_and_their_tasks_read_the_same_worker_slots(
    monkeypatch: pytest.MonkeyPatch, value: str | None, workers: int
) -> None:
    set_or_unset(monkeypatch, "POSTIER_WORKERS", value)
    # The chunk tasks a DAG maps, and the shares a task plans the run's chunks for.
    assert chunk_task_count() == environment().workers == workers


@pytest.mark.parametrize("value", ["deux", "0", "-2", "2.5"])
def test_a_bad_worker_slot_count_is_refused_in_french(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("POSTIER_WORKERS", value)
    refusal = f"POSTIER_WORKERS « {value} » invalide : un nombre entier au moins égal à 1"
    with pytest.raises(ConfigurationError, match=refusal):
        chunk_task_count()
    with pytest.raises(ConfigurationError, match=refusal):
        environment()


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 300.0), ("", 300.0), ("45", 45.0), ("0.3", 0.3)]
)
def test_the_delivery_lock_wait_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float
) -> None:
    set_or_unset(monkeypatch, "POSTIER_DELIVERY_LOCK_WAIT_SECONDS", value)
    assert env_settings.delivery_lock_wait() == seconds


@pytest.mark.parametrize("value", ["cinq", "0", "-1", "nan", "inf", "5 min"])
def test_a_bad_delivery_lock_wait_is_refused_in_french(value: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=f"POSTIER_DELIVERY_LOCK_WAIT_SECONDS « {value} » invalide : un nombre de secondes",
    ):
        env_settings.delivery_lock_wait({"POSTIER_DELIVERY_LOCK_WAIT_SECONDS": value})
