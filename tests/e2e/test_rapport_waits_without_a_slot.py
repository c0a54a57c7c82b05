"""`rapport` on a real Airflow (LocalExecutor, the clerk's REST API): triggered by a chunk task
that failed for good while the other is still at work, it waits for it without holding a
worker slot (up for reschedule between its looks), then writes the report of the whole run."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from builders import insert_paper_invoices

from postier.store.cluster import APP_ROLE, OWNER_ROLE

from .live_airflow import RUN_TIMEOUT, Airflow
from .test_send_through_airflow import HOLD, api, diagnosis, task_states, trigger  # noqa: F401

#: How long the second processing of the invoice takes: the other chunk task's work in flight.
SLOW_S = 15
#: This test's batch, in the session's shared Postier database: no other test's (the clerk's
#: browser test lists batch 601 with its held invoices).
BATCH = 7401


@pytest.fixture
def fails_then_slow(airflow: Airflow) -> Iterator[str]:
    """An invoice whose first processing fails, and whose second takes `SLOW_S` then succeeds
    (a trigger of the owner's, dropped afterwards: the session's Postier database is shared)."""
    (number,) = insert_paper_invoices(airflow.postier_dsn, "SLOT", BATCH, 1)
    owner = airflow.postier_dsn.replace(f"{APP_ROLE}@", f"{OWNER_ROLE}@", 1)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE slot_tries")
        conn.execute(
            "CREATE FUNCTION slot_fault() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "AS $$ BEGIN "
            f"IF NEW.number = '{number}' THEN "
            "  IF nextval('slot_tries') = 1 THEN RAISE EXCEPTION 'panne simulée'; END IF; "
            f"  PERFORM pg_sleep({SLOW_S}); "
            "END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slot_fault BEFORE UPDATE ON invoices FOR EACH ROW "
            "EXECUTE FUNCTION slot_fault()"
        )
    try:
        yield number
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("DROP TRIGGER slot_fault ON invoices")
            conn.execute("DROP FUNCTION slot_fault()")
            conn.execute("DROP SEQUENCE slot_tries")


def test_rapport_waits_for_the_chunk_task_at_work_without_holding_a_slot(
    airflow: Airflow,
    api: httpx.Client,  # noqa: F811
    fails_then_slow: str,
) -> None:
    run_id = trigger(airflow, api, HOLD, {"lot_debut": BATCH, "lot_fin": BATCH})
    # One chunk for the two chunk tasks: the first fails on it (no retry here), the other, which
    # waited for it, takes it up and is at work for SLOW_S more; rapport starts meanwhile.
    seen: set[str | None] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        seen.add(task_states(api, HOLD, run_id).get("rapport[-1]"))
        state = api.get(f"/dags/{HOLD}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    why = diagnosis(airflow, api, HOLD, run_id)

    # Airflow's rule: the run's state is its last task's, rapport's (which found the report
    # written and current: the run went well in the end).
    assert state == "success", why
    states = task_states(api, HOLD, run_id)
    assert sorted(s for t, s in states.items() if t.startswith("traiter_paquet")) == [
        "failed",
        "success",
    ], why
    assert states["rapport[-1]"] == "success", why
    # While the other chunk task was at work, rapport gave its slot back (a sensor's
    # reschedule), instead of polling in it.
    assert "up_for_reschedule" in seen, (seen, why)
    # Its report is the whole run's: the invoice processed by the task that took it up.
    run = airflow.postier_run(HOLD, run_id)
    assert run["status"] == "terminee" and run["counts"]["traitees"] == 1, run
    with psycopg.connect(airflow.postier_dsn) as conn:
        row = conn.execute(
            "SELECT send_state FROM invoices WHERE number = %s", (fails_then_slow,)
        ).fetchone()
    assert row == ("EN_ATTENTE",)
