"""Real DAG runs of the send that deposit `plateforme` invoices on a local Plateforme Agréée (the
AFNOR Flow Service over HTTP, every request and answer validated against the official OpenAPI)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice

from postier.delivery.local_pa import LocalPlatform


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
    states = {ti.task_id: ti.state for ti in first.get_task_instances()}
    # The chunk task delivered and wrote the report: no task process after it.
    assert set(states) == {"selectionner", "confirmation", "traiter_paquet", "rapport"}
    assert (states["traiter_paquet"], states["rapport"]) == ("success", "skipped")
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
    selected = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "selectionner")
    assert (selected.state, selected.try_number) == ("failed", 1)
    run = report(postier_env)
    assert run["statut"] == "échec : configuration à corriger, rien n'a été traité"
    assert "aucune plateforme agréée n'est configurée" in run["motif"]
    assert "postier_plateforme" in run["motif"]
    with psycopg.connect(postier_env) as conn:
        sent = conn.execute("SELECT number, send_state FROM invoices ORDER BY number").fetchall()
    assert sent == [("FP-NOPA-1", "PRET"), ("FP-NOPA-2", "PRET")]
