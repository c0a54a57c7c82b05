"""Real DAG runs (`dag.test()`) of the state treatments against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from builders import insert_invoice


def states(dsn: str) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT number, send_state, state_changed_by FROM invoices").fetchall()
    return {n: (s, by) for n, s, by in rows}


def last_run(dsn: str) -> tuple[str, dict, dict]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status, counts, report FROM runs ORDER BY id DESC").fetchone()
    assert row is not None
    return row


def test_hold_moves_selected_ready_invoices_back_and_stamps_the_user(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="H-5A", send_state="PRET", batch_number=5)
        insert_invoice(conn, number="H-5B", send_state="PRET", batch_number=5)
        insert_invoice(conn, number="H-6", send_state="PRET", batch_number=6)
        insert_invoice(conn, number="H-5-WAIT", batch_number=5)
    dag_run = run_dag("factures_mettre_en_attente", {"lot_debut": 5, "lot_fin": 5})
    assert dag_run.state == "success"
    got = states(postier_env)
    assert got["H-5A"] == ("EN_ATTENTE", "dag_test") and got["H-5B"] == ("EN_ATTENTE", "dag_test")
    assert got["H-6"][0] == "PRET" and got["H-5-WAIT"] == ("EN_ATTENTE", None)
    status, counts, report = last_run(postier_env)
    assert status == "terminee" and counts["traitees"] == 2 and counts["selectionnees"] == 2
    markdown = Path(report["rapport"]).read_text()
    assert "Mettre en attente" in markdown and "| 2 | 2 | 0 | 0 | 0 |" in markdown
    assert json.loads(Path(report["rapport"]).with_suffix(".json").read_text())["lance_par"] == (
        "dag_test"
    )


def test_keep_internal_then_requeue_round_trip(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="Z-0", total_net=0, total_vat=0, total_gross=0)
        insert_invoice(conn, number="Z-SENT", send_state="ENVOYE")
    assert run_dag("factures_conserver_en_interne").state == "success"
    assert states(postier_env)["Z-0"][0] == "CONSERVE_INTERNE"
    assert states(postier_env)["Z-SENT"][0] == "ENVOYE"
    assert run_dag("factures_remettre_en_attente").state == "success"
    assert states(postier_env)["Z-0"][0] == "EN_ATTENTE"


def test_invalid_criteria_fail_the_first_task_and_change_nothing(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="BAD-1", send_state="PRET")
    dag_run = run_dag("factures_mettre_en_attente", {"lot_debut": 9, "lot_fin": 1})
    assert dag_run.state == "failed"
    assert states(postier_env)["BAD-1"][0] == "PRET"
    with psycopg.connect(postier_env) as conn:
        # Recorded as refused (with its report), nothing selected, nothing left « en cours ».
        assert conn.execute("SELECT status FROM runs").fetchall() == [("criteres_invalides",)]
        assert conn.execute("SELECT count(*) FROM run_items").fetchone() == (0,)


def test_retried_chunk_after_a_fault_mid_chunk_ends_like_a_clean_run(  # type: ignore[no-untyped-def]
    run_dag, postier_env, owner_dsn
) -> None:
    with psycopg.connect(postier_env) as conn:
        for n in range(30):
            insert_invoice(conn, number=f"F-{n:03d}", send_state="PRET")
    with psycopg.connect(owner_dsn) as conn:  # DDL: the owner role
        # A crash in the middle of the chunk, on its first attempt only (a sequence is not
        # rolled back with the failed transaction, so the retry passes).
        conn.execute("CREATE SEQUENCE fault_once")
        conn.execute(
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.number = 'F-017' AND nextval('fault_once') = 1 THEN "
            "RAISE EXCEPTION 'panne simulée'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fault BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION fault()"
        )
    dag_run = run_dag("factures_mettre_en_attente")
    assert dag_run.state == "success"
    got = states(postier_env)
    assert {s for s, _ in got.values()} == {"EN_ATTENTE"}
    with psycopg.connect(postier_env) as conn:
        # 1: the failed attempt, 2: the retry, 3: this read — the chunk did fail once.
        assert conn.execute("SELECT nextval('fault_once')").fetchone() == (3,)
        logs = conn.execute("SELECT count(*), count(DISTINCT invoice_id) FROM exchanges").fetchone()
    assert logs == (30, 30)  # one exchange row per invoice: nothing was stamped twice
    status, counts, _ = last_run(postier_env)
    assert status == "terminee" and counts["traitees"] == 30
