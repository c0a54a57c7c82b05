"""Treatments run by a real Airflow, driven like a clerk would through the REST API.

A named user logs in, triggers the DAG with criteria, answers the send confirmation (HITL), and the
ERP database is checked afterwards: states, login stamps, the run report. Each test uses its own
batch numbers in the session's Postier database, and finds its run by the Airflow run id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from builders import insert_paper_invoices, read_rows

from .live_airflow import FINISHED_RUN_STATES, RUN_TIMEOUT, TASK_STATE_TIMEOUT, Airflow

CLERK = "jmartin"
SEND = "factures_envoyer"
HOLD = "factures_mettre_en_attente"


@pytest.fixture
def api(airflow: Airflow) -> Iterator[httpx.Client]:
    with airflow.client(CLERK) as client:
        yield client


# -- ERP side ---------------------------------------------------------------------------------


def invoices(dsn: str, numbers: list[str]) -> dict[str, dict[str, Any]]:
    rows = read_rows(
        dsn,
        "SELECT number, send_state, sent_at, sent_by, state_changed_by FROM invoices "
        "WHERE number = ANY(%s)",
        (numbers,),
    )
    keys = ("send_state", "sent_at", "sent_by", "state_changed_by")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


# -- Airflow side -----------------------------------------------------------------------------


def trigger(airflow: Airflow, api: httpx.Client, dag_id: str, conf: dict[str, Any]) -> str:
    """Unpause (a clerk's DAG is paused at creation) and trigger now; the new run id."""
    airflow.wait_for_dag(api, dag_id)
    response = api.patch(f"/dags/{dag_id}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    response = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return str(response.json()["dag_run_id"])


def task_states(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, str | None]:
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    response.raise_for_status()
    return {
        f"{ti['task_id']}[{ti['map_index']}]": ti["state"]
        for ti in response.json()["task_instances"]
    }


def diagnosis(airflow: Airflow, api: httpx.Client, dag_id: str, run_id: str) -> str:
    try:
        states = task_states(api, dag_id, run_id)
    except httpx.HTTPError as error:
        states = {"?": repr(error)}
    return f"task states: {states}\n{airflow.task_logs(dag_id, run_id)}"


def wait_for_task_state(
    airflow: Airflow, api: httpx.Client, dag_id: str, run_id: str, task_id: str, state: str
) -> None:
    def reached() -> bool | None:
        response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        got = response.json().get("state") if response.status_code == 200 else None
        if got in ("failed", "upstream_failed", "skipped", "removed"):
            why = diagnosis(airflow, api, dag_id, run_id)
            raise AssertionError(f"{task_id} ended {got} instead of {state}\n{why}")
        return True if got == state else None

    airflow.wait_for(
        f"{dag_id}/{run_id}: {task_id} {state}",
        reached,
        TASK_STATE_TIMEOUT,
        context=lambda: diagnosis(airflow, api, dag_id, run_id),
    )


def wait_for_run(
    airflow: Airflow, api: httpx.Client, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT
) -> str:
    """The final state of the run (success or failed)."""

    def finished() -> str | None:
        state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        return state if state in FINISHED_RUN_STATES else None

    return airflow.wait_for(
        f"run {dag_id}/{run_id} to finish",
        finished,
        timeout,
        context=lambda: diagnosis(airflow, api, dag_id, run_id),
    )


def assert_run_succeeded(
    airflow: Airflow, api: httpx.Client, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT
) -> None:
    state = wait_for_run(airflow, api, dag_id, run_id, timeout)
    assert state == "success", f"run {run_id} {state}\n{diagnosis(airflow, api, dag_id, run_id)}"


def hitl_path(dag_id: str, run_id: str, task_id: str = "confirmation") -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"


def confirm(airflow: Airflow, api: httpx.Client, run_id: str, option: str) -> dict[str, Any]:
    """Wait for the send confirmation to await input, check what it shows, answer `option`."""
    wait_for_task_state(airflow, api, SEND, run_id, "confirmation", "awaiting_input")
    airflow.wait_for_parked_worker_exit(SEND, run_id, "confirmation")
    detail = api.get(hitl_path(SEND, run_id)).json()
    assert detail["options"] == ["Envoyer", "Ne pas envoyer"] and not detail["response_received"]
    response = api.patch(hitl_path(SEND, run_id), json={"chosen_options": [option]})
    assert response.status_code == 200, response.text
    assert response.json()["responded_by"]["name"] == CLERK
    return detail


# -- tests ------------------------------------------------------------------------------------


def test_hold_triggered_by_a_named_user_is_stamped_with_that_login(
    airflow: Airflow, api: httpx.Client
) -> None:
    """The harness on a treatment without documents nor confirmation."""
    held = insert_paper_invoices(airflow.postier_dsn, "HOLD", 301, 2)
    other = insert_paper_invoices(airflow.postier_dsn, "HOLD", 302, 1)

    run_id = trigger(airflow, api, HOLD, {"lot_debut": 301, "lot_fin": 301})
    assert_run_succeeded(airflow, api, HOLD, run_id)

    got = invoices(airflow.postier_dsn, held + other)
    assert {n: (got[n]["send_state"], got[n]["state_changed_by"]) for n in held} == {
        n: ("EN_ATTENTE", CLERK) for n in held
    }
    assert got[other[0]]["send_state"] == "PRET"
    run = airflow.postier_run(HOLD, run_id)
    assert (run["status"], run["triggered_by"]) == ("terminee", CLERK)

    # The run's report is on the « Exécutions » page of the Postier plugin, for signed-in users.
    anonymous = httpx.get(f"{airflow.base_url}/postier/executions")
    assert anonymous.status_code == 303 and "/auth/login" in anonymous.headers["location"]
    page = api.get(f"{airflow.base_url}/postier/executions")
    assert page.status_code == 200 and f"/postier/executions/{run['id']}'" in page.text
    report = api.get(f"{airflow.base_url}/postier/executions/{run['id']}")
    assert "Mettre en attente" in report.text and "<table>" in report.text
    assert run["counts"]["traitees"] == 2
    # Its counts are on the Airflow run too (the note, in the grid), set by the scheduler.
    # with a link back to the run's Postier page.
    assert api.get(f"/dags/{HOLD}/dagRuns/{run_id}").json()["note"] == (
        f"2 sélectionnée(s) · 2 traitée(s) · [rapport](/postier/executions/{run['id']})"
    )


def test_send_triggered_by_a_named_user_is_stamped_with_that_login(
    airflow: Airflow, api: httpx.Client
) -> None:
    to_send = insert_paper_invoices(airflow.postier_dsn, "SEND", 401, 3)
    other = insert_paper_invoices(airflow.postier_dsn, "SEND", 402, 1)

    run_id = trigger(airflow, api, SEND, {"lot_debut": 401, "lot_fin": 401})
    detail = confirm(airflow, api, run_id, "Envoyer")
    assert "3 facture(s)" in detail["body"] and "définitif" in detail["body"]
    assert_run_succeeded(airflow, api, SEND, run_id)

    got = invoices(airflow.postier_dsn, to_send + other)
    for number in to_send:
        assert got[number]["send_state"] == "ENVOYE", (number, got[number])
        assert got[number]["sent_by"] == CLERK and got[number]["sent_at"] is not None
    assert got[other[0]]["send_state"] == "PRET" and got[other[0]]["sent_at"] is None
    run = airflow.postier_run(SEND, run_id)
    assert (run["status"], run["triggered_by"]) == ("terminee", CLERK)
    assert run["counts"]["traitees"] == 3


def test_rejected_confirmation_sends_nothing(airflow: Airflow, api: httpx.Client) -> None:
    kept = insert_paper_invoices(airflow.postier_dsn, "REJ", 501, 2)

    run_id = trigger(airflow, api, SEND, {"lot_debut": 501, "lot_fin": 501})
    confirm(airflow, api, run_id, "Ne pas envoyer")
    assert_run_succeeded(airflow, api, SEND, run_id)

    got = invoices(airflow.postier_dsn, kept)
    assert {n: (got[n]["send_state"], got[n]["sent_at"]) for n in kept} == {
        n: ("PRET", None) for n in kept
    }
    run = airflow.postier_run(SEND, run_id)
    assert (run["status"], run["triggered_by"]) == ("refusee", CLERK)
