"""Real DAG runs of the send treatment that e-mail portal customers through a real SMTP server."""

from __future__ import annotations

import psycopg
import pytest
from airflow_state import task_states
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)


def last_report(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def portal_book(postier_env: str) -> None:
    with psycopg.connect(postier_env) as conn:
        celeu = insert_customer(
            conn, code="000035", name="CÉLEU GROUPE", emails=["paul.pausission@celeu.fr"]
        )
        for number in ("140863", "140864"):
            insert_invoice(conn, celeu, number=number, send_state="PRET")
        insert_invoice(conn, insert_customer(conn, channel="papier"), send_state="PRET")


def test_send_dag_emails_each_portal_customer_once(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    portal_book,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTIER_SMTP_URL", smtp_server.url())
    dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")
    assert dag_run.state == "success"
    # A chunk task delivered and wrote the report: no task process after the chunks (each of
    # the four mapped chunk tasks succeeded).
    assert task_states(dag_run) == {"confirmation": "success", "rapport": "skipped"} | {
        f"traiter_paquet[{i}]": "success" for i in range(4)
    }
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["paul.pausission@celeu.fr"]
    message = received.message
    assert message["Subject"] == "Mise à disposition de factures sur votre espace client"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Destinataire : 000035 CÉLEU GROUPE" in text
    assert "La facture n° 140863 émise le 02/11/2026" in text and "n° 140864" in text
    report = last_report(postier_env)
    assert report["courriels"]["envoyes"] == 1 and report["courriels"]["en_attente"] == 0
    # A second send run finds nothing to send and mails nobody again.
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    assert len(smtp_server.received) == 1


def test_send_dag_with_smtp_down_succeeds_and_the_next_run_delivers(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    portal_book,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTIER_SMTP_URL", smtp_server.url())
    smtp_server.stop()
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    report = last_report(postier_env)
    assert report["compteurs"]["traitees"] == 3  # the definitive send stands
    assert report["courriels"]["en_attente"] == 1
    assert "injoignable" in report["courriels"]["anomalies"][0]["motif"]
    smtp_server.start()
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    assert last_report(postier_env)["courriels"]["rattrapes"] == 1
    assert len(smtp_server.received) == 1
