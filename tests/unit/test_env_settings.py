"""The deployment's numeric settings read from the environment (`postier.env_settings`): each
read in one place, a bad value refused in French naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from postier import env_settings
from postier.airflow.dag_factory import chunk_task_count
from postier.airflow.runtime import environment
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment


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


@pytest.mark.parametrize(
    ("retries", "delay", "expected"),
    [(None, None, (2, 30)), ("", "", (2, 30)), ("0", "0", (0, 0)), (" 5 ", "90", (5, 90))],
)
def test_the_task_retries_and_their_delay_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, retries: str | None, delay: str | None, expected: tuple
) -> None:
    set_or_unset(monkeypatch, "POSTIER_TASK_RETRIES", retries)
    set_or_unset(monkeypatch, "POSTIER_RETRY_DELAY_SECONDS", delay)
    defaults = env_settings.task_defaults()
    assert (defaults["retries"], defaults["retry_delay"].total_seconds()) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTIER_TASK_RETRIES", "deux"),
        ("POSTIER_TASK_RETRIES", "-1"),
        ("POSTIER_TASK_RETRIES", "1.5"),
        ("POSTIER_RETRY_DELAY_SECONDS", "30s"),
        ("POSTIER_RETRY_DELAY_SECONDS", "-5"),
    ],
)
def test_a_bad_task_retry_setting_is_refused_in_french(name: str, value: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=f"{name} « {value} » invalide : un nombre entier au moins égal à 0 est attendu",
    ):
        env_settings.task_defaults({name: value})


@pytest.mark.parametrize(("value", "minutes"), [(None, 120), ("", 120), ("1", 1), ("45", 45)])
def test_the_confirmation_wait_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, minutes: int
) -> None:
    set_or_unset(monkeypatch, "POSTIER_CONFIRMATION_MINUTES", value)
    assert env_settings.confirmation_timeout().total_seconds() == minutes * 60


@pytest.mark.parametrize("value", ["deux heures", "0", "-10", "1.5"])
def test_a_bad_confirmation_wait_is_refused_in_french(value: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=f"POSTIER_CONFIRMATION_MINUTES « {value} » invalide : un nombre entier au moins "
        "égal à 1 est attendu",
    ):
        env_settings.confirmation_timeout({"POSTIER_CONFIRMATION_MINUTES": value})


@pytest.mark.parametrize(
    ("value", "production"),
    [
        (None, False),
        ("", False),
        ("development", False),
        ("production", True),
        (" Production ", True),
        ("DEVELOPMENT", False),
    ],
)
def test_production_mode_is_read_the_same_by_every_task_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, production: bool
) -> None:
    set_or_unset(monkeypatch, "POSTIER_ENV", value)
    # An Airflow task's environment, and one built by the CLI or a test.
    assert environment().production is production
    assert Environment(dsn="", home=Path("/nonexistent")).production is production


@pytest.mark.parametrize("value", ["prod", "dev", "production,", "1"])
def test_an_unknown_postier_env_is_refused_in_french_not_read_as_development(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("POSTIER_ENV", value)
    # The whole message, as the clerk reads it in the task's log: French to its last word.
    refusal = (
        f"^POSTIER_ENV « {value} » invalide : production ou development est attendu "
        r"\(ou rien : development, où la clé de signature, la GED et la boîte d'envoi de "
        r"démonstration sont permises\)$"
    )
    with pytest.raises(ConfigurationError, match=refusal):
        environment()
    with pytest.raises(ConfigurationError, match=refusal):
        Environment(dsn="", home=Path("/nonexistent"))
