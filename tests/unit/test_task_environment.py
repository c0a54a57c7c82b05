"""A task reads each connection when it first uses it, once (issue 13): a task that sends no
e-mail is not stopped by the SMTP server's settings, and asks the api-server for nothing it does
not use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from postier.airflow import runtime
from postier.airflow.runtime import environment
from postier.errors import ConfigurationError

PASSWORD = "Zq8Kp3#wLm"


def smtp_connection(host: str) -> str:
    return json.dumps({"conn_type": "smtp", "host": host, "port": 587})


def test_a_connection_that_cannot_be_read_fails_only_where_it_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_POSTIER_SMTP", raising=False)
    monkeypatch.setenv("POSTIER_SMTP_URL", f"smtp://facturation:{PASSWORD}@relais.example.fr:587")
    monkeypatch.setenv("POSTIER_DB_DSN", "postgresql://postier_app@127.0.0.1:5432/postier")

    env = environment()

    assert env.dsn == "postgresql://postier_app@127.0.0.1:5432/postier"
    with pytest.raises(ConfigurationError, match=r"POSTIER_SMTP_URL \(smtp://relais.example.fr\)"):
        _ = env.smtp


def test_a_connection_is_read_once_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTIER_SMTP_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_SMTP", smtp_connection("relais-1.example.fr"))
    env = environment()
    first = env.smtp
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_SMTP", smtp_connection("relais-2.example.fr"))

    assert first is not None and first.host == "relais-1.example.fr"
    assert env.smtp is first
    # The next task reads it again.
    again = environment().smtp
    assert again is not None and again.host == "relais-2.example.fr"


def test_the_signing_key_problem_is_read_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_POSTIER_SIGNING",
        json.dumps({"conn_type": "generic", "extra": {"pkcs12_path": "/nulle/part/cle.p12"}}),
    )
    env = environment()

    assert env.signing_pkcs12 == b""
    assert env.signing_problem is not None
    assert "Certificat de signature introuvable" in env.signing_problem


def test_a_connection_that_cannot_be_read_is_refused_once_per_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Incomplete: no token_url. Each reading would be an api-server request in a real Airflow,
    # and the directory is asked for once per buyer looked up.
    monkeypatch.delenv("POSTIER_ANNUAIRE_URL", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_POSTIER_ANNUAIRE",
        json.dumps({"conn_type": "http", "host": "annuaire.example.fr", "login": "postier"}),
    )
    env = environment()
    with pytest.raises(ConfigurationError, match="« postier_annuaire » incomplète") as first:
        _ = env.annuaire
    monkeypatch.setenv(
        "AIRFLOW_CONN_POSTIER_ANNUAIRE",
        json.dumps(
            {
                "conn_type": "http",
                "host": "annuaire.example.fr",
                "extra": {"token_url": "https://annuaire.example.fr/token"},
            }
        ),
    )

    # The same refusal for the next buyer, without reading the connection again.
    with pytest.raises(ConfigurationError) as again:
        _ = env.annuaire
    assert str(again.value) == str(first.value)
    # The next task reads it again.
    again_config = environment().annuaire
    assert again_config is not None and again_config.base_url == "https://annuaire.example.fr"


def test_a_connection_that_failed_otherwise_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a refusal (ConfigurationError) is kept for the task: an api-server that did not answer
    # is asked again at the next use.
    monkeypatch.delenv("POSTIER_SMTP_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_SMTP", smtp_connection("relais.example.fr"))
    read = runtime.Connection.get
    asked: list[str] = []

    def unanswered_once(conn_id: str) -> Any:
        asked.append(conn_id)
        if len(asked) == 1:
            raise ConnectionError("api-server injoignable")
        return read(conn_id)

    monkeypatch.setattr(runtime.Connection, "get", unanswered_once)
    env = environment()
    with pytest.raises(ConnectionError):
        _ = env.smtp

    config = env.smtp
    assert config is not None and config.host == "relais.example.fr"
    assert asked == ["postier_smtp", "postier_smtp"]
