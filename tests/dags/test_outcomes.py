"""What a run says happened: refused criteria, configuration problems, all or part refused,
the send confirmation, nothing to send — on real DAG runs (`dag.test()`) and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow_state import note
from builders import insert_customer, insert_invoice
from hitl import Clerk

from postier.documents.samples import sample_identity


def last_run(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status, counts, report, finished_at FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None, "the run has no row: it would be missing from Postier's « Exécutions »"
    return dict(zip(("status", "counts", "report", "finished_at"), row, strict=True))


def task(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    return next(
        ti
        for ti in dag_run.get_task_instances()
        if ti.task_id == task_id and ti.map_index == map_index
    )


def states(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())


# -- invalid criteria ---------------------------------------------------------------------------


def test_reversed_range_fails_at_once_and_the_run_has_its_report(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="BAD-1", send_state="PRET", batch_number=5)
    dag_run = run_dag("factures_mettre_en_attente", {"lot_debut": 9, "lot_fin": 1})

    assert dag_run.state == "failed"
    # Every chunk task starts the run: each failed at once with the reason (retries=1 here).
    chunks = [ti for ti in dag_run.get_task_instances() if ti.task_id == "traiter_paquet"]
    assert [(ti.state, ti.try_number) for ti in chunks] == [("failed", 1)] * 4
    report = task(dag_run, "rapport")  # ran, wrote nothing more, and carries the failure
    assert (report.state, report.try_number) == ("failed", 1)
    assert states(postier_env) == {"BAD-1": "PRET"}
    run = last_run(postier_env)
    assert run["status"] == "criteres_invalides" and run["finished_at"] is not None
    assert run["report"]["statut"] == "refusé : critères invalides"
    assert "plage de numéros de lot inversée" in run["report"]["motif"]
    markdown = Path(run["report"]["rapport"]).read_text()
    assert "refusé : critères invalides" in markdown and "plage de numéros de lot" in markdown
    assert note(dag_run).startswith("refusé : critères invalides — Critères de sélection")


def test_edit_date_in_year_9999_is_refused_in_french_without_a_run_left_running(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    dag_run = run_dag(
        "factures_imprimer", {"date_edition_fin": "9999-12-31", "sans_date_edition": False}
    )
    assert dag_run.state == "failed"
    run = last_run(postier_env)
    assert run["status"] == "criteres_invalides"
    assert "Date d'édition (fin) : date hors des limites (31/12/9999" in run["report"]["motif"]


# -- configuration ------------------------------------------------------------------------------


def test_collection_without_chorus_server_fails_with_its_reason(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_POSTIER_CHORUS_SFTP", raising=False)
    monkeypatch.delenv("POSTIER_CHORUS_SFTP_URL", raising=False)
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, insert_customer(conn, channel="chorus"), send_state="ENVOYE")
    dag_run = run_dag("factures_chorus_recuperer")

    assert dag_run.state == "failed"
    assert task(dag_run, "traiter_paquet", 0).try_number == 1
    run = last_run(postier_env)
    assert run["status"] == "en_erreur"
    assert run["report"]["statut"] == "échec : configuration à corriger, rien n'a été traité"
    assert "aucun serveur Chorus Pro n'est configuré" in run["report"]["motif"]
    assert "aucun serveur Chorus" in note(dag_run)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (None, "mot de passe incorrect"),  # a real key, another passphrase
        ({"pkcs12_path": "/nulle/part/cle.p12"}, "Certificat de signature introuvable"),
    ],
    ids=["wrong-passphrase", "no-key-file"],
)
def test_send_with_an_unusable_signing_key_fails_before_asking_anything(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch, extra: Any, reason: str
) -> None:
    if extra is None:
        extra = {"pkcs12_base64": base64.b64encode(sample_identity(b"la-bonne").pkcs12).decode()}
    monkeypatch.setenv(
        "AIRFLOW_CONN_POSTIER_SIGNING",
        json.dumps({"conn_type": "generic", "password": "une-autre", "extra": extra}),
    )
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="SIGN-1", send_state="PRET")
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "failed" and clerk.asked == []
    assert states(postier_env) == {"SIGN-1": "PRET"}
    run = last_run(postier_env)
    assert run["status"] == "en_erreur"
    assert reason in run["report"]["motif"]
    assert "envoi refusé à la confirmation" not in run["report"]["statut"]
    assert "une-autre" not in json.dumps(run["report"]) + note(dag_run)


def test_send_with_an_unreadable_ged_fails_before_signing_or_asking(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A login for a local folder: the connection cannot be read (the SMTP case is in
    # test_secret_in_url.py). Archiving is on by default.
    monkeypatch.setenv(
        "AIRFLOW_CONN_POSTIER_GED",
        json.dumps(
            {"conn_type": "generic", "host": "/srv/ged", "login": "ged", "password": "Gd9-secret"}
        ),
    )
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="GED-1", send_state="PRET")
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "failed" and clerk.asked == []
    assert states(postier_env) == {"GED-1": "PRET"}
    with psycopg.connect(postier_env) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
    run = last_run(postier_env)
    assert run["status"] == "en_erreur"
    assert "connexion postier_ged : login et mot de passe" in run["report"]["motif"]
    assert "Gd9-secret" not in json.dumps(run["report"]) + note(dag_run)


# -- all or part refused ------------------------------------------------------------------------


def test_a_run_that_refused_every_invoice_fails(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        no_mail = insert_customer(conn, emails=[])
        insert_invoice(conn, no_mail, number="KO-1")
        insert_invoice(conn, no_mail, number="KO-2")
    dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "failed"
    assert task(dag_run, "rapport").try_number == 1
    run = last_run(postier_env)
    assert run["status"] == "en_erreur"
    assert run["report"]["statut"] == "échec : toutes les factures sélectionnées ont été refusées"
    assert note(dag_run).startswith("échec : toutes les factures")


def test_a_partial_refusal_succeeds_with_its_counts_on_the_run(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, insert_customer(conn, emails=[]), number="KO-1")
        insert_invoice(conn, number="OK-1")
        insert_invoice(conn, number="OK-2")
    dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    run_id = last_run(postier_env)["report"]["execution"]
    assert note(dag_run) == (
        f"3 sélectionnée(s) · 2 traitée(s) · 1 refusée(s) · [rapport](/postier/executions/{run_id})"
    )
    assert last_run(postier_env)["status"] == "terminee"


# -- the send confirmation ----------------------------------------------------------------------


def test_confirmation_lists_the_invoices_and_answers_in_french(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        celeu = insert_customer(conn, code="000035", name="CÉLEU GROUPE", channel="papier")
        for n in range(52):
            insert_invoice(conn, celeu, number=f"CONF-{n:03d}", send_state="PRET")
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success"
    ((asked),) = clerk.asked
    assert asked["options"] == ["Envoyer", "Ne pas envoyer"]
    body = asked["body"]
    assert "| CONF-000 | 000035 CÉLEU GROUPE |" in body and "| CONF-049 |" in body
    assert "CONF-050" not in body and "… et 2 autres" in body
    assert body.rstrip().endswith("Souhaitez-vous poursuivre ?")
    assert set(states(postier_env).values()) == {"ENVOYE"}


def test_a_confirmation_left_unanswered_fails_the_test_with_why_instead_of_hanging(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="AWAY-1", send_state="PRET")
    started = time.monotonic()
    try:
        with (
            pytest.raises(pytest.fail.Exception, match="still awaiting input after 3 s") as failed,
            Clerk("factures_envoyer", None, within=3),
        ):
            run_dag("factures_envoyer")
    finally:
        _fail_awaiting_confirmations("factures_envoyer")

    assert "never answered" in str(failed.value)
    assert time.monotonic() - started < 300  # well before pytest-timeout's 600 s
    assert states(postier_env) == {"AWAY-1": "PRET"}


def test_an_answer_given_before_dag_test_records_the_wait_still_sends(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dag.test()` writes the task's wait over the row after the execution API did; a clerk who
    answered in between (CI's loaded machine, once) must not leave the run awaiting for ever."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState

    set_state = TaskInstance.set_state

    def late_wait(self: Any, state: Any, **kwargs: Any) -> Any:
        if state == TaskInstanceState.AWAITING_INPUT:
            time.sleep(1.5)  # the clerk polls every 0.3 s: it answers in this gap
        return set_state(self, state, **kwargs)

    monkeypatch.setattr(TaskInstance, "set_state", late_wait)
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EARLY-1", send_state="PRET")
    try:
        with Clerk("factures_envoyer", "Envoyer", within=10) as clerk:
            dag_run = run_dag("factures_envoyer")
    finally:
        _fail_awaiting_confirmations("factures_envoyer")

    assert dag_run.state == "success"
    assert len(clerk.asked) == 1  # asked once, resumed again without asking twice
    assert states(postier_env) == {"EARLY-1": "ENVOYE"}


def _fail_awaiting_confirmations(dag_id: str) -> None:
    """The interrupted run's confirmation, left awaiting input: failed, so that no later clerk
    of the session answers it."""
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import update

    with settings.Session() as session:
        session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
            )
            .values(state=TaskInstanceState.FAILED)
        )
        session.commit()


def test_answering_ne_pas_envoyer_sends_nothing(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="NO-1", send_state="PRET")
    with Clerk("factures_envoyer", "Ne pas envoyer"):
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success"
    assert states(postier_env) == {"NO-1": "PRET"}
    assert last_run(postier_env)["status"] == "refusee"


def test_nothing_to_send_asks_nothing_and_says_so(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="WAIT-1")  # En attente: not for the send
    with Clerk("factures_envoyer", "Ne pas envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert clerk.asked == []
    assert dag_run.state == "success"
    assert task(dag_run, "confirmation").state == "skipped"
    run = last_run(postier_env)
    assert run["status"] == "terminee" and "rien à envoyer" in run["report"]["statut"]
    assert "rien à envoyer" in Path(run["report"]["rapport"]).read_text()


# -- names and logins ---------------------------------------------------------------------------


def test_chunk_tasks_are_named_by_part_and_demo_runs_carry_a_clerks_login(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTIER_DEMO_LOGIN", "jmartin")
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="H-1", send_state="PRET")
    dag_run = run_dag("factures_mettre_en_attente")

    assert dag_run.state == "success"
    chunk = task(dag_run, "traiter_paquet", 0)
    assert chunk.rendered_map_index == "part 0"
    assert "lot" not in dag_run.dag.get_task("traiter_paquet").task_display_name
    with psycopg.connect(postier_env) as conn:
        assert conn.execute("SELECT state_changed_by FROM invoices").fetchone() == ("jmartin",)
    assert last_run(postier_env)["report"]["lance_par"] == "jmartin"
