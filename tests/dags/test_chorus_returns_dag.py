"""The scheduled `chorus_retours` DAG: its definition, and one real run (`dag.test()`)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from chorus_return_files import invoice_file
from dag_files import load_dag

BUYER = "11000201100044"
FLOW = "FSO1117A_POSTIE_AIFE011117000000000000009"


def test_runs_every_quarter_hour_paused_documented_and_retried() -> None:
    dag = load_dag("chorus_retours")
    assert dag.is_paused_upon_creation is True and not dag.catchup
    assert dag.timetable.expression == "*/15 * * * *"
    assert str(dag.timetable.timezone) == "Europe/Paris"
    assert set(dag.tags) == {"postier", "chorus", "planifié"}
    assert dag.max_active_runs == 1 and dict(dag.params) == {}
    assert [t.task_id for t in dag.tasks] == ["rapprocher"]
    assert all(t.retries >= 1 for t in dag.tasks)
    last_paragraph = dag.doc_md.strip().split("\n\n")[-1]
    assert last_paragraph.startswith("Relancer : ")


def test_a_scheduled_run_applies_good_files_and_quarantines_bad_ones(  # type: ignore[no-untyped-def]
    run_dag, postier_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn, channel="chorus", siret=BUYER)
        insert_invoice(conn, customer, number="DAG-1", send_state="ENVOYE")
        conn.execute(
            "UPDATE invoices SET chorus_flow_name = %s, "
            "chorus_deposited_at = '2026-11-02 18:00+01'",
            (FLOW,),
        )
    out = tmp_path / "chorus" / "out"
    out.mkdir(parents=True)
    (out / "FEN1200A_1").write_bytes(
        invoice_file(
            ("DAG-1", "04", "2026-11-05T00:00:00"),
            comment="Engagement juridique inconnu",
            debtor=BUYER,
        )
    )
    (out / "FEN1200A_2").write_bytes(
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><CPPStatut>&e;</CPPStatut>'
    )
    monkeypatch.setenv("POSTIER_CHORUS_RETURNS_DIR", str(tmp_path / "chorus"))

    dag_run = run_dag("chorus_retours")

    assert dag_run.state == "success"
    assert sorted(p.name for p in (out / "processed").iterdir()) == ["FEN1200A_1"]
    assert sorted(p.name for p in (out / "quarantine").iterdir()) == ["FEN1200A_2"]
    with psycopg.connect(postier_env) as conn:
        invoice = conn.execute(
            "SELECT chorus_status, chorus_deposited_at FROM invoices WHERE number = 'DAG-1'"
        ).fetchone()
        exchange = conn.execute(
            "SELECT partner, status, report FROM exchanges WHERE kind = 'retour_chorus'"
        ).fetchall()
        run = conn.execute(
            "SELECT treatment, status, triggered_by, report FROM runs ORDER BY id DESC"
        ).fetchone()
    assert invoice == ("04", None)
    assert [(p, s, r["rapport"]) for p, s, r in exchange] == [
        (
            "CHORUS",
            "04",
            "retour du flux EDI : 04 Rejetée par l'ordonnateur pour erreur données acheminement",
        )
    ]
    assert run is not None and run[:2] == ("chorus_retours", "terminee")
    report = json.loads(Path(run[3]["rapport"]).with_suffix(".json").read_text())
    assert report["rejets"][0]["motif"] == "Engagement juridique inconnu"
    assert "DOCTYPE" in report["quarantaine"][0]["motif"]
