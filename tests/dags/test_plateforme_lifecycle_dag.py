"""The scheduled `plateforme_cycle_de_vie` DAG, run for real (`dag.test()`) against the local
Plateforme Agréée: it produces CDAR lifecycle flows (CustomerInvoiceLC, valid against the official
schema) for the invoices it received, and validates every request and answer against the AFNOR
Flow OpenAPI (`violations` must stay empty)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from builders import insert_customer, insert_deposited_invoice, insert_invoice, lifecycle_of
from cdar_files import cdar
from dag_files import load_dag

from postier.delivery.local_pa import LocalPlatform
from postier.delivery.plateforme import FlowClient, PlatformConfig

PARIS = ZoneInfo("Europe/Paris")
DAG_ID = "plateforme_cycle_de_vie"


def deposited(dsn: str, platform: LocalPlatform, number: str) -> None:
    """An invoice of a `plateforme` customer, deposited on the local PA through its API."""
    state = platform.state
    config = PlatformConfig(
        platform.base_url, platform.token_url, state.client_id, state.client_secret
    )
    with FlowClient(config) as client:
        flow = client.deposit(
            b"%PDF-1.7 facture", name=f"{number}.pdf", tracking_id=number, sha256="0" * 64
        )
    with psycopg.connect(dsn) as conn:
        insert_deposited_invoice(conn, number, flow.flow_id)


def lifecycle(dsn: str, number: str) -> tuple[list[str], tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return lifecycle_of(conn, number)


def last_report(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status, report FROM runs WHERE treatment = %s ORDER BY id DESC LIMIT 1",
            (DAG_ID,),
        ).fetchone()
    assert row is not None
    return {"run_status": row[0], **row[1]}


def watermark(dsn: str) -> datetime | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT updated_after FROM plateforme_lifecycle_watermark").fetchone()
    return None if row is None else row[0]


def downloads(platform: LocalPlatform) -> list[str]:
    return [path for path, status in platform.state.calls if "docType=Original" in path]


def test_runs_every_quarter_hour_paused_documented_and_retried() -> None:
    dag = load_dag(DAG_ID)
    assert dag.is_paused_upon_creation is True and not dag.catchup
    assert dag.timetable.expression == "*/15 * * * *"
    assert str(dag.timetable.timezone) == "Europe/Paris"
    assert dag.max_active_runs == 1 and dict(dag.params) == {}
    assert [t.task_id for t in dag.tasks] == ["relever"]
    assert all(t.retries >= 1 for t in dag.tasks)
    assert dag.doc_md.strip().split("\n\n")[-1].startswith("Relancer : ")


def test_statuses_200_to_212_of_sent_invoices_come_back_in_order_with_refusals_and_payments(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform
) -> None:
    with psycopg.connect(postier_env) as conn:
        b2b = insert_customer(conn, channel="plateforme", siren="732829320")
        insert_invoice(conn, b2b, number="FP-LC-1", send_state="PRET")
        insert_invoice(conn, b2b, number="FP-LC-2", send_state="PRET")
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    # The buyer's side, on the PA: it reads the invoice number from the Factur-X it received.
    codes = ["200", "202", "203", "204", "205", "211", "212"]
    platform.lifecycle("FP-LC-1", *codes)
    platform.lifecycle("FP-LC-2", "200", ("210", "montant contesté"))

    dag_run = run_dag(DAG_ID)

    assert dag_run.state == "success"
    logged, (status, _, paid_at) = lifecycle(postier_env, "FP-LC-1")
    assert logged == codes and status == "212" and paid_at is not None
    logged, (status, reason, _) = lifecycle(postier_env, "FP-LC-2")
    assert logged == ["200", "210"] and (status, reason) == ("210", "montant contesté")
    report = last_report(postier_env)
    assert report["run_status"] == "terminee"
    assert report["compteurs"] == {
        "flux": 9,
        "appliques": 9,
        "quarantaine": 0,
        "statuts": 9,
        "a_traiter": 1,
        "encaissements": 1,
    }
    [refused] = report["a_traiter"]
    assert (refused["facture"], refused["code"], refused["motif"]) == (
        "FP-LC-2",
        "210",
        "montant contesté",
    )
    [paid] = report["encaissements"]
    assert paid["facture"] == "FP-LC-1"
    assert datetime.fromisoformat(paid["date_statut"]) == paid_at
    markdown = open(report["rapport"], encoding="utf-8").read()
    assert "| FP-LC-2 | 210 Refusée | montant contesté |" in markdown
    assert "## Encaissements (212)" in markdown


def test_an_older_status_arriving_later_never_overwrites_a_newer_one(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform
) -> None:
    deposited(postier_env, platform, "FP-LC-3")
    now = datetime.now(PARIS)
    platform.lifecycle("FP-LC-3", "205", at=now)
    assert run_dag(DAG_ID).state == "success"
    platform.lifecycle("FP-LC-3", ("207", "quantités en litige"), at=now - timedelta(hours=2))

    assert run_dag(DAG_ID).state == "success"

    logged, (status, reason, _) = lifecycle(postier_env, "FP-LC-3")
    assert logged == ["205", "207"] and (status, reason) == ("205", None)
    report = last_report(postier_env)
    [line] = report["statuts"]
    assert line["code"] == "207" and line["courant"] is False
    # The column says what « oui » means: the status became the current one when applied.
    markdown = open(report["rapport"], encoding="utf-8").read()
    assert "| Facture | Statut | Date | Devenu le statut courant | Flux |" in markdown
    assert "non (plus ancien que le statut connu)" in markdown


def test_hostile_invalid_or_unknown_flows_are_quarantined_while_the_others_apply(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform
) -> None:
    deposited(postier_env, platform, "FP-LC-4")
    now = datetime.now(PARIS)
    bomb = platform.add_lifecycle_flow(
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r>&b;</r>'
    )
    unknown = platform.add_lifecycle_flow(cdar("FA-JAMAIS", "200", now))
    not_cdar = platform.add_lifecycle_flow(
        cdar("FP-LC-4", "200", now).replace(b"ram:IssuerAssignedID", b"ram:Inconnu")
    )
    platform.lifecycle("FP-LC-4", ("213", "SIREN du destinataire inconnu"))

    dag_run = run_dag(DAG_ID)

    assert dag_run.state == "success"
    logged, (status, reason, _) = lifecycle(postier_env, "FP-LC-4")
    assert logged == ["213"] and (status, reason) == ("213", "SIREN du destinataire inconnu")
    report = last_report(postier_env)
    reasons = {q["flux"]: q["motif"] for q in report["quarantaine"]}
    assert reasons.keys() == {bomb, unknown, not_cdar}
    assert "DOCTYPE/ENTITY interdite" in reasons[bomb]
    assert "facture FA-JAMAIS, inconnue ou jamais déposée" in reasons[unknown]
    assert "non conforme au schéma officiel CDAR D22B" in reasons[not_cdar]
    assert [line["code"] for line in report["a_traiter"]] == ["213"]
    with psycopg.connect(postier_env) as conn:
        recorded = dict(
            conn.execute("SELECT flow_id, status FROM plateforme_lifecycle_flows").fetchall()
        )
    assert sorted(recorded.values()) == ["applique", "quarantaine", "quarantaine", "quarantaine"]


def test_each_flow_is_read_once_and_the_watermark_follows_what_was_recorded(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform
) -> None:
    deposited(postier_env, platform, "FP-LC-5")
    platform.lifecycle("FP-LC-5", "200", "202")
    assert run_dag(DAG_ID).state == "success"
    first_mark = watermark(postier_env)
    newest = max(f.updated for f in platform.state.flows if f.flow_type == "CustomerInvoiceLC")
    assert first_mark == datetime.fromisoformat(newest)
    assert len(downloads(platform)) == 2

    assert run_dag(DAG_ID).state == "success"  # nothing new: nothing read, nothing applied

    assert len(downloads(platform)) == 2 and watermark(postier_env) == first_mark
    assert last_report(postier_env)["compteurs"]["flux"] == 0
    platform.lifecycle("FP-LC-5", "212")

    assert run_dag(DAG_ID).state == "success"

    assert len(downloads(platform)) == 3 and watermark(postier_env) > first_mark  # type: ignore[operator]
    logged, (status, _, paid_at) = lifecycle(postier_env, "FP-LC-5")
    assert logged == ["200", "202", "212"] and status == "212" and paid_at is not None


def test_pa_down_fails_the_run_in_french_and_the_next_run_applies_the_rest_once(  # type: ignore[no-untyped-def]
    run_dag, postier_env, platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposited(postier_env, platform, "FP-LC-6")
    first, second, third = platform.lifecycle("FP-LC-6", "200", "202", "203")
    # The PA goes down after the first flow: every try of every attempt of the task gets 503.
    for _ in range(8):
        platform.answer_next(f"/v1/flows/{second}", 503, retry_after="0")

    failed = run_dag(DAG_ID)

    assert failed.state == "failed"
    report = last_report(postier_env)
    assert report["run_status"] == "en_erreur"
    assert report["statut"].startswith("incomplète : plateforme agréée")
    assert "indisponible (HTTP 503" in report["erreur"]
    assert lifecycle(postier_env, "FP-LC-6")[0] == ["200"]
    platform.state.script.clear()

    assert run_dag(DAG_ID).state == "success"

    assert lifecycle(postier_env, "FP-LC-6")[0] == ["200", "202", "203"]
    fetched = [p.split("?")[0].rsplit("/", 1)[1] for p in downloads(platform)]
    assert fetched.count(first) == 1 and fetched.count(third) == 1

    # Unreachable altogether (nothing listens): the run fails with the reason, nothing changes.
    dead = json.loads(platform.airflow_connection())
    dead["extra"] = {"base_url": "http://127.0.0.1:9/fs", "token_url": "http://127.0.0.1:9/t"}
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_PLATEFORME", json.dumps(dead))
    assert run_dag(DAG_ID).state == "failed"
    assert "jeton d'accès non obtenu" in last_report(postier_env)["erreur"]
