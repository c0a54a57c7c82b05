"""A task whose SMTP URL holds an unencoded `#` fails with a message that keeps the password out
of the task log (issue 9, « Secrets »)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from builders import insert_invoice

PASSWORD = "Zq8Kp3#wLm"


def test_task_log_never_shows_a_password_from_a_bad_smtp_url(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch, caplog, capfd
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="SEC-1", send_state="PRET")
    monkeypatch.setenv("POSTIER_SMTP_URL", f"smtp://facturation:{PASSWORD}@relais.example.fr:587")
    caplog.set_level(logging.DEBUG)
    dag_run = run_dag("factures_mettre_en_attente")
    out, err = capfd.readouterr()
    log = caplog.text + out + err
    assert dag_run.state == "failed"
    assert "POSTIER_SMTP_URL (smtp://relais.example.fr)" in log
    assert [p for p in ("Zq8Kp3", "wLm", "facturation") if p in log] == []


@pytest.fixture(autouse=True)
def _no_other_smtp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_POSTIER_SMTP", raising=False)
