"""A send whose SMTP URL holds an unencoded `#` fails before asking anything, with a message that
keeps the password out of the task log (issue 9, « Secrets »); a treatment that sends no e-mail
does not read the SMTP server at all (issue 13: connections are read when used)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from builders import insert_invoice
from hitl import Clerk

PASSWORD = "Zq8Kp3#wLm"


def test_task_log_never_shows_a_password_from_a_bad_smtp_url(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch, caplog, capfd
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="SEC-1", send_state="PRET")
    monkeypatch.setenv("POSTIER_SMTP_URL", f"smtp://facturation:{PASSWORD}@relais.example.fr:587")
    caplog.set_level(logging.DEBUG)
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")
    out, err = capfd.readouterr()
    log = caplog.text + out + err
    assert dag_run.state == "failed" and clerk.asked == []
    assert "POSTIER_SMTP_URL (smtp://relais.example.fr)" in log
    assert [p for p in ("Zq8Kp3", "wLm", "facturation") if p in log] == []


def test_a_treatment_without_e_mail_does_not_read_the_smtp_server(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="SEC-2", send_state="PRET")
    monkeypatch.setenv("POSTIER_SMTP_URL", f"smtp://facturation:{PASSWORD}@relais.example.fr:587")
    dag_run = run_dag("factures_mettre_en_attente")
    assert dag_run.state == "success"
    with psycopg.connect(postier_env) as conn:
        row = conn.execute("SELECT send_state FROM invoices WHERE number = 'SEC-2'").fetchone()
    assert row == ("EN_ATTENTE",)


@pytest.fixture(autouse=True)
def _no_other_smtp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_POSTIER_SMTP", raising=False)
