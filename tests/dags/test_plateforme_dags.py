"""Real DAG runs of the send that deposit `plateforme` invoices on a local Plateforme Agréée (the
AFNOR Flow Service over HTTP, every request and answer validated against the official OpenAPI)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from airflow_state import task_states
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)

from postier.delivery.local_oauth import TOKEN_PATH
from postier.delivery.local_pa import LocalPlatform

#: The chunk tasks a run maps (one per worker slot: POSTIER_WORKERS, 4 unless told).
CHUNK_TASKS = 4


def report(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return dict(row[0])


def test_send_dag_deposits_plateforme_invoices_and_the_next_send_what_the_pa_could_not_take(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform
) -> None:
    with psycopg.connect(postier_env) as conn:
        b2b = insert_customer(conn, channel="plateforme", siren="732829320")
        insert_invoice(conn, b2b, number="FP-DAG-1", send_state="PRET")
        insert_invoice(conn, b2b, number="FP-DAG-2", send_state="PRET")
        insert_invoice(conn, insert_customer(conn, channel="papier"), send_state="PRET")
    # The PA is overloaded for longer than we wait: nothing deposited, nothing lost.
    for _ in range(4):
        platform.answer_next("/v1/flows", 503, retry_after="0")

    first = run_dag("factures_envoyer", mark_success_pattern="confirmation")

    assert first.state == "success"
    states = task_states(first)
    # A chunk task delivered and wrote the report: no task process after the chunks.
    assert states == {"confirmation": "success", "rapport": "skipped"} | {
        f"traiter_paquet[{i}]": "success" for i in range(CHUNK_TASKS)
    }
    pending = report(postier_env)["plateforme"]
    assert pending["deposees"] == 0 and pending["en_attente"] == ["FP-DAG-1", "FP-DAG-2"]
    assert platform.state.flows == []

    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, b2b, number="FP-DAG-3", send_state="PRET")
    second = run_dag("factures_envoyer", mark_success_pattern="confirmation")

    assert second.state == "success"
    names = sorted(flow.info["name"] for flow in platform.state.flows)
    assert names == ["FP-DAG-1.pdf", "FP-DAG-2.pdf", "FP-DAG-3.pdf"]
    deposited = report(postier_env)["plateforme"]
    assert deposited["deposees"] == 3 and deposited["en_attente"] == []


def test_send_with_plateforme_invoices_and_no_platform_is_refused_before_anything_is_sent(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_POSTIER_PLATEFORME", raising=False)
    monkeypatch.delenv("POSTIER_PLATEFORME_URL", raising=False)
    with psycopg.connect(postier_env) as conn:
        b2b = insert_customer(conn, channel="plateforme", siren="732829320")
        insert_invoice(conn, b2b, number="FP-NOPA-1", send_state="PRET")
        paper = insert_customer(conn, channel="papier")
        insert_invoice(conn, paper, number="FP-NOPA-2", send_state="PRET")

    dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")

    assert dag_run.state == "failed"
    # The confirmation marked done without running: the chunk tasks started the run, and were
    # refused.
    chunks = [ti for ti in dag_run.get_task_instances() if ti.task_id == "traiter_paquet"]
    assert [(ti.state, ti.try_number) for ti in chunks] == [("failed", 1)] * 4
    run = report(postier_env)
    assert run["statut"] == "échec : configuration à corriger, rien n'a été traité"
    assert "aucune plateforme agréée n'est configurée" in run["motif"]
    assert "postier_plateforme" in run["motif"]
    with psycopg.connect(postier_env) as conn:
        sent = conn.execute("SELECT number, send_state FROM invoices ORDER BY number").fetchall()
    assert sent == [("FP-NOPA-1", "PRET"), ("FP-NOPA-2", "PRET")]


@pytest.fixture
def refusing_pa(  # type: ignore[no-untyped-def]
    postier_env,
    platform: LocalPlatform,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """An invoice for the PA and one for a portal customer mailed through the test's relay, and a
    PA that refuses Postier's credentials (its secret changed on its side: a configuration to
    fix); the secret that it accepts."""
    monkeypatch.setenv("POSTIER_SMTP_URL", smtp_server.url())
    with psycopg.connect(postier_env) as conn:
        b2b = insert_customer(conn, channel="plateforme", siren="732829320")
        insert_invoice(conn, b2b, number="FP-CONF-1", send_state="PRET")
        portal = insert_customer(conn, emails=["compta@client.fr"])
        insert_invoice(conn, portal, number="MAIL-CONF-1", send_state="PRET")
    right = platform.state.client_secret
    platform.state.client_secret = "changé-côté-plateforme"
    return right


def send_states(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT number, send_state FROM invoices ORDER BY number").fetchall()


def test_the_pa_refusing_postiers_credentials_fails_the_run_once_the_send_is_announced(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    platform: LocalPlatform,
    smtp_server: SmtpServer,  # noqa: F811
    refusing_pa: str,
) -> None:
    dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")

    assert dag_run.state == "failed"
    tis = dag_run.get_task_instances()
    chunks = [ti for ti in tis if ti.task_id == "traiter_paquet"]
    # ONE chunk task delivered: it failed on the deposit, and again on its retry (which had
    # nothing left to process); the others left the delivery to it. Then rapport delivered what
    # it could, wrote the report and failed with why.
    assert sorted((ti.state, ti.try_number) for ti in chunks) == [("failed", 2)] + [
        ("success", 1)
    ] * (CHUNK_TASKS - 1)
    assert task_states(dag_run)["rapport"] == "failed"
    # Postier's credentials were offered to the PA by that task's two tries and by rapport:
    # not by every chunk task (a PA may lock the account after a few refusals).
    assert platform.state.calls.count((TOKEN_PATH, 401)) == 3
    # The send is definitive and announced, once, whatever the tries.
    assert send_states(postier_env) == [("FP-CONF-1", "ENVOYE"), ("MAIL-CONF-1", "ENVOYE")]
    assert [r.rcpt_tos for r in smtp_server.received] == [["compta@client.fr"]]
    assert platform.state.flows == []
    run = report(postier_env)
    assert run["compteurs"]["traitees"] == 2 and run["courriels"]["envoyes"] == 1
    assert run["plateforme"]["en_attente"] == ["FP-CONF-1"]

    # Once the configuration is fixed, the next send deposits the invoice, and mails nobody.
    platform.state.client_secret = refusing_pa
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    assert [flow.info["name"] for flow in platform.state.flows] == ["FP-CONF-1.pdf"]
    assert len(smtp_server.received) == 1


def test_a_retry_of_the_chunk_task_delivers_again_and_processes_nothing(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    platform: LocalPlatform,
    smtp_server: SmtpServer,  # noqa: F811
    refusing_pa: str,
) -> None:
    fixed = threading.Event()

    def fix_once_refused() -> None:
        # The PA's administrator puts the secret back as soon as Postier's was refused: the
        # chunk task's retry (no delay in these tests) finds it fixed.
        while not fixed.is_set():
            with platform.state.lock:
                if (TOKEN_PATH, 401) in platform.state.calls:
                    platform.state.client_secret = refusing_pa
                    fixed.set()
            time.sleep(0.001)

    fixer = threading.Thread(target=fix_once_refused, daemon=True)
    fixer.start()
    try:
        dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")
    finally:
        fixed.set()
        fixer.join()

    assert dag_run.state == "success"
    # The chunk task that delivered was retried; the others found nothing to do.
    chunks = [ti for ti in dag_run.get_task_instances() if ti.task_id == "traiter_paquet"]
    assert sorted((ti.state, ti.try_number) for ti in chunks) == [("success", 1)] * (
        CHUNK_TASKS - 1
    ) + [("success", 2)]
    # It is the one marked in the run's row as its deliverer.
    (retried,) = [ti.map_index for ti in chunks if ti.try_number == 2]
    with psycopg.connect(postier_env) as conn:
        assert conn.execute("SELECT deliverer FROM runs").fetchall() == [(retried,)]
    assert task_states(dag_run)["rapport"] == "skipped"
    # Each invoice processed once, announced once, deposited once.
    assert [r.rcpt_tos for r in smtp_server.received] == [["compta@client.fr"]]
    assert [flow.info["name"] for flow in platform.state.flows] == ["FP-CONF-1.pdf"]
    with psycopg.connect(postier_env) as conn:
        (announced,) = conn.execute(
            "SELECT count(*) FROM exchanges WHERE kind = 'mise_a_disposition'"
        ).fetchone() or (0,)
    assert announced == 1
    run = report(postier_env)
    assert run["statut"] == "terminée" and run["plateforme"]["deposees"] == 1
    assert run["courriels"]["envoyes"] == 1


def test_a_clear_once_the_pa_is_fixed_deposits_and_reports_it(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    platform: LocalPlatform,
    smtp_server: SmtpServer,  # noqa: F811
    refusing_pa: str,
) -> None:
    # The same Airflow run twice (same logical date and run_after: same run id): the second is a
    # « Clear » of the run once the PA's configuration is fixed.
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def send() -> Any:
        return run_dag(
            "factures_envoyer",
            mark_success_pattern="confirmation",
            logical_date=when,
            run_after=when,
        )

    assert send().state == "failed"
    assert report(postier_env)["plateforme"]["en_attente"] == ["FP-CONF-1"]
    platform.state.client_secret = refusing_pa

    cleared = send()

    assert cleared.state == "success"
    # Deposited by the Clear, the e-mail not sent again, and the report says so.
    assert [flow.info["name"] for flow in platform.state.flows] == ["FP-CONF-1.pdf"]
    assert [r.rcpt_tos for r in smtp_server.received] == [["compta@client.fr"]]
    run = report(postier_env)
    assert run["execution"] == 1 and run["statut"] == "terminée"
    assert run["plateforme"]["deposees"] == 1 and run["plateforme"]["en_attente"] == []
    assert run["courriels"]["envoyes"] == 1
