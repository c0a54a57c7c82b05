"""A real DAG run of the preparation that finds a `plateforme` buyer's address in the directory
(a local AFNOR Directory Service over HTTP, reached through the Airflow connection
`postier_annuaire`, every request and answer validated against the official OpenAPI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice

from postier.delivery.local_annuaire import LocalDirectory, running_directory
from postier.delivery.plateforme import forget_tokens


@pytest.fixture
def directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalDirectory]:
    forget_tokens()
    for server in running_directory():
        monkeypatch.setenv("AIRFLOW_CONN_POSTIER_ANNUAIRE", server.airflow_connection())
        yield server
        assert server.state.violations == []


def test_preparation_dag_routes_a_buyer_through_the_directory_and_refuses_an_unknown_one(  # type: ignore[no-untyped-def]
    run_dag, postier_env, directory: LocalDirectory
) -> None:
    directory.add_line("732829320", siret="73282932000074")
    with psycopg.connect(postier_env) as conn:
        known = insert_customer(conn, channel="plateforme", einvoicing_address=None)
        unknown = insert_customer(
            conn, channel="plateforme", siren="552100554", siret=None, einvoicing_address=None
        )
        insert_invoice(conn, known, number="FP-DAG-ANN")
        insert_invoice(conn, unknown, number="FP-DAG-INCONNU")

    dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    with psycopg.connect(postier_env) as conn:
        states = dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())
        recorded = conn.execute(
            "SELECT i.number, a.address, a.source FROM invoice_einvoicing_addresses a "
            "JOIN invoices i ON i.id = a.invoice_id"
        ).fetchall()
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    report: dict[str, Any] = row[0]
    assert states == {"FP-DAG-ANN": "PRET", "FP-DAG-INCONNU": "EN_ATTENTE"}
    assert recorded == [("FP-DAG-ANN", "732829320_73282932000074", "annuaire")]
    (anomaly,) = report["anomalies"]
    assert anomaly["facture"] == "FP-DAG-INCONNU" and "absent de l'annuaire" in anomaly["motif"]
