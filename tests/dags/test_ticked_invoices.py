"""The `factures` param (invoices ticked in the Postier list) through a real DAG run."""

from __future__ import annotations

import psycopg
from builders import insert_invoice


def test_print_dag_takes_only_the_ticked_invoices(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        ids = [insert_invoice(conn, number=f"D-{n}") for n in range(4)]
    dag_run = run_dag("factures_imprimer", {"mode": "imprimer", "factures": [ids[1], ids[3]]})
    assert dag_run.state == "success"
    with psycopg.connect(postier_env) as conn:
        edited = dict(conn.execute("SELECT number, edited_at IS NOT NULL FROM invoices"))
        report = conn.execute("SELECT report FROM runs").fetchone()[0]  # type: ignore[index]
    assert edited == {"D-0": False, "D-1": True, "D-2": False, "D-3": True}
    assert report["compteurs"]["selectionnees"] == 2
    assert "2 facture(s) cochée(s) dans la liste" in open(report["rapport"]).read()
