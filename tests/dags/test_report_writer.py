"""Which task writes a run's report, on real DAG runs (`dag.test()`) and PostgreSQL: the task that
ends the run's work when all goes well (for a send, after delivering), `rapport` (its own task
process) only after a failure — with the same report, run note and final state of the run
either way."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow_state import count_publishes, note, task_states
from builders import insert_customer, insert_invoice, read_rows
from hitl import Clerk
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)

from postier.airflow.run_note import NOTE_KEY
from postier.delivery.mail import SmtpConfig
from postier.pipeline import mailing, reports
from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_send, delivery_claim, end_send
from postier.pipeline.reports import write_report
from postier.store import database
from postier.store import runs as run_store

#: The chunk tasks a run maps (one per worker slot: POSTIER_WORKERS, 4 unless told).
CHUNK_TASKS = 4


def chunk_tasks(state: str) -> dict[str, str]:
    """Every chunk task of a run in `state`."""
    return {f"traiter_paquet[{i}]": state for i in range(CHUNK_TASKS)}


def chunks_in(states: dict[str, str]) -> set[str]:
    """The states the chunk tasks of `states` (`task_states`) are in."""
    return {state for task, state in states.items() if task.startswith("traiter_paquet")}


#: A run that failed with one of its chunk tasks, whichever it was, then `rapport` (`outcome`).
ONE_CHUNK_TASK_THEN_RAPPORT_FAILED = (
    "failed",
    ["failed"] + ["success"] * (CHUNK_TASKS - 1),
    "failed",
)


def outcome(dag_run: Any) -> tuple[str, list[str], str]:
    """The run's state, its chunk tasks' (sorted: whichever task it was), rapport's."""
    states = task_states(dag_run)
    chunks = sorted(state for task, state in states.items() if task.startswith("traiter_paquet"))
    return dag_run.state, chunks, states["rapport"]


def note_writers(dag_run: Any) -> list[str]:
    """The tasks that put the run's note in XCom (each one wrote, or re-read, the report)."""
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    with settings.Session() as session:
        rows = session.execute(
            select(XComModel.task_id).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.key == NOTE_KEY,
            )
        ).all()
    return sorted(r[0] for r in rows)


def last_run(dsn: str) -> dict[str, Any]:
    (row,) = read_rows(
        dsn, "SELECT id, status, report, finished_at FROM runs ORDER BY id DESC LIMIT 1"
    )
    return dict(zip(("id", "status", "report", "finished_at"), row, strict=True))


def expected_note(run: dict[str, Any], counts: str) -> str:
    return f"{counts} · [rapport](/postier/executions/{run['id']})"


def test_a_prepare_writes_its_report_from_its_chunk_task(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="P-1")
        insert_invoice(conn, number="P-2")
    dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    assert task_states(dag_run) == chunk_tasks("success") | {"rapport": "skipped"}
    # The first to leave nothing wrote it, the others put its note again.
    assert note_writers(dag_run) == ["traiter_paquet"] * CHUNK_TASKS
    run = last_run(postier_env)
    assert run["status"] == "terminee" and run["report"]["compteurs"]["traitees"] == 2
    assert "| 2 | 2 | 0 | 0 | 0 |" in Path(run["report"]["rapport"]).read_text()
    assert note(dag_run) == expected_note(run, "2 sélectionnée(s) · 2 traitée(s)")


def test_nothing_selected_is_reported_once_by_the_chunk_tasks(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = count_publishes(monkeypatch)
    dag_run = run_dag("factures_mettre_en_attente")

    assert dag_run.state == "success"
    # Each found nothing to process: the first wrote the report, the others its note again.
    assert task_states(dag_run) == chunk_tasks("success") | {"rapport": "skipped"}
    assert note_writers(dag_run) == ["traiter_paquet"] * CHUNK_TASKS
    run = last_run(postier_env)
    assert published == [run["id"]]
    assert run["status"] == "terminee" and run["report"]["compteurs"]["selectionnees"] == 0
    assert Path(run["report"]["rapport"]).is_file()
    assert note(dag_run) == expected_note(run, "0 sélectionnée(s)")


def test_a_print_writes_its_report_from_finaliser_with_the_print_file(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="IMP-1", send_state="PRET")
    dag_run = run_dag("factures_imprimer", {"sans_date_edition": True})

    assert dag_run.state == "success"
    states = task_states(dag_run)
    assert (states["finaliser"], states["rapport"]) == ("success", "skipped")
    # Skipped by `finaliser` before it ended: the scheduler ends the run at the loop that sees
    # its end, not one loop and an idle sleep later.
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances() if ti.map_index == -1}
    assert tis["rapport"].end_date < tis["finaliser"].end_date
    assert note_writers(dag_run) == ["finaliser"]
    report = last_run(postier_env)["report"]
    print_file = next(f for f in report["fichiers"] if f.endswith("impression.pdf"))
    # Its files still pushed as its XCom (a skip returns none): what `rapport` would read.
    assert tis["finaliser"].xcom_pull(task_ids="finaliser") == [print_file]
    assert Path(print_file).read_bytes().startswith(b"%PDF")
    assert f"`{print_file}`" in Path(report["rapport"]).read_text()


def test_a_send_delivers_and_writes_its_report_from_its_chunk_task(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="ENV-1", send_state="PRET")
    with Clerk("factures_envoyer", "Envoyer"):
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success"
    # No task process after the chunks: the chunk task delivered and reported.
    assert task_states(dag_run) == {"confirmation": "success"} | chunk_tasks("success") | {
        "rapport": "skipped"
    }
    # ONE chunk task delivered and wrote the report; the others ended at once, leaving the
    # delivery to it (not waiting on the run's lock for as long as it delivers).
    assert note_writers(dag_run) == ["traiter_paquet"]
    run = last_run(postier_env)
    # The e-mails it sent are in the report it wrote.
    assert run["status"] == "terminee" and run["report"]["courriels"]["boite_locale"] == 1
    assert note(dag_run) == expected_note(run, "1 sélectionnée(s) · 1 traitée(s)")


def test_a_refused_confirmation_is_reported_by_the_confirmation(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="NO-1", send_state="PRET")
    with Clerk("factures_envoyer", "Ne pas envoyer"):
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success"
    states = task_states(dag_run)
    assert (chunks_in(states), states["rapport"]) == ({"skipped"}, "skipped")
    assert note_writers(dag_run) == ["confirmation"]
    run = last_run(postier_env)
    assert run["status"] == "refusee" and run["report"]["compteurs"]["non_traitees"] == 1
    assert "refusé à la confirmation" in Path(run["report"]["rapport"]).read_text()
    assert note(dag_run).startswith("envoi refusé à la confirmation : rien n'a été envoyé — ")
    assert read_rows(postier_env, "SELECT send_state FROM invoices") == [("PRET",)]


def test_nothing_to_send_is_reported_by_the_confirmation(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with Clerk("factures_envoyer", "Envoyer") as clerk:
        dag_run = run_dag("factures_envoyer")

    assert dag_run.state == "success" and clerk.asked == []
    states = task_states(dag_run)
    # It selected, found nothing to send: it wrote the report, and nothing more runs.
    assert (states["confirmation"], chunks_in(states)) == ("skipped", {"skipped"})
    assert states["rapport"] == "skipped"
    assert note_writers(dag_run) == ["confirmation"]
    run = last_run(postier_env)
    assert "rien à envoyer" in run["report"]["statut"]
    assert note(dag_run) == expected_note(run, "0 sélectionnée(s)")


def fail_updates_of_ko_1(owner_dsn: str) -> None:
    """Every update of invoice KO-1 fails from now on: its chunk fails on each attempt."""
    with psycopg.connect(owner_dsn) as conn:  # DDL: the owner role
        conn.execute(
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.number = 'KO-1' THEN RAISE EXCEPTION 'panne simulée'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fault BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION fault()"
        )


def test_a_failed_chunk_fails_the_run_with_the_report_of_rapport(  # type: ignore[no-untyped-def]
    run_dag, postier_env, owner_dsn
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="KO-1", send_state="PRET")
    fail_updates_of_ko_1(owner_dsn)
    dag_run = run_dag("factures_mettre_en_attente")

    assert dag_run.state == "failed"
    # Each chunk task took the chunk up in turn, and failed with it.
    assert task_states(dag_run) == chunk_tasks("failed") | {"rapport": "failed"}
    # The chunk tasks ended with its invoice pending: they wrote nothing, rapport did.
    assert note_writers(dag_run) == ["rapport"]
    run = last_run(postier_env)
    assert run["status"] == "en_erreur" and run["report"]["compteurs"]["non_traitees"] == 1
    assert "| 1 | 0 | 0 | 0 | 1 |" in Path(run["report"]["rapport"]).read_text()
    assert note(dag_run).startswith("incomplète : factures ou fichier d'impression non traités")


def one_invoice_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_store, "MIN_CHUNK", 1)
    monkeypatch.setattr(run_store, "CHUNK_S", run_store.INVOICE_S)


def send_with_a_failing_chunk(
    dsn: str, owner_dsn: str, relay: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invoices to send, one a chunk, to customers mailed through `relay`: KO-1 fails its
    chunk, OK-1 is sent."""
    monkeypatch.setenv("POSTIER_SMTP_URL", relay.url())
    one_invoice_per_chunk(monkeypatch)
    with psycopg.connect(dsn) as conn:
        for number in ("KO-1", "OK-1"):
            customer = insert_customer(conn, emails=[f"{number.lower()}@client.fr"])
            insert_invoice(conn, customer, number=number, send_state="PRET")
    fail_updates_of_ko_1(owner_dsn)


# The clerk's « Envoyer », or the confirmation marked « success » by hand (Airflow's grid, the
# demo's runs): no answer then, yet the chunks ran, so not a refusal.
@pytest.mark.parametrize("approved", ["answered", "marked"])
def test_a_failed_chunk_of_a_send_has_rapport_deliver_the_others_and_fail_the_run(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    owner_dsn,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    approved: str,
) -> None:
    send_with_a_failing_chunk(postier_env, owner_dsn, smtp_server, monkeypatch)
    if approved == "answered":
        with Clerk("factures_envoyer", "Envoyer"):
            dag_run = run_dag("factures_envoyer")
    else:
        dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    # The chunk task ended with KO-1 pending: it delivered nothing, wrote nothing; rapport
    # delivered what the other chunk sent, then wrote the report that says the run is incomplete.
    assert (states["traiter_paquet[0]"], states["rapport"]) == ("failed", "failed")
    assert note_writers(dag_run) == ["rapport"]
    assert [r.rcpt_tos for r in smtp_server.received] == [["ok-1@client.fr"]]
    run = last_run(postier_env)
    assert run["status"] == "en_erreur" and run["report"]["compteurs"]["non_traitees"] == 1
    assert run["report"]["courriels"]["envoyes"] == 1
    assert note(dag_run).startswith("incomplète")


def test_rapport_delivers_under_the_runs_delivery_lock(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    owner_dsn,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send_with_a_failing_chunk(postier_env, owner_dsn, smtp_server, monkeypatch)
    released: list[datetime] = []

    def chunk_task_still_delivering() -> None:
        # Holds the run's delivery lock from the run's start (as a chunk task still at work
        # past rapport's wait would), until rapport waits for it.
        deadline = time.monotonic() + 60
        with psycopg.connect(postier_env, autocommit=True) as conn:
            while (row := conn.execute("SELECT external_id FROM runs").fetchone()) is None:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            ref = row[0]
            conn.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", (ref, mailing.DELIVERY_LOCK))
            while time.monotonic() < deadline:
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND classid = hashtext(%s)::oid AND objid = %s::int4::oid AND objsubid = 2",
                    (ref, mailing.DELIVERY_LOCK),
                ).fetchone() or (0,)
                if waiting:
                    time.sleep(0.3)
                    ((now,),) = conn.execute("SELECT clock_timestamp()").fetchall()
                    released.append(now)
                    break
                time.sleep(0.05)

    holder = threading.Thread(target=chunk_task_still_delivering)
    holder.start()
    try:
        dag_run = run_dag("factures_envoyer", mark_success_pattern="confirmation")
    finally:
        holder.join()

    assert dag_run.state == "failed" and task_states(dag_run)["rapport"] == "failed"
    # rapport waited for the lock, then delivered.
    assert released
    assert [r.rcpt_tos for r in smtp_server.received] == [["ok-1@client.fr"]]
    ((sent_at,),) = read_rows(postier_env, "SELECT sent_at FROM outbox")
    assert sent_at > released[0]


def test_a_delivery_failing_leaves_the_report_to_rapport_and_fails_the_run(  # type: ignore[no-untyped-def]
    run_dag, postier_env, owner_dsn
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="MAIL-1", send_state="PRET")
    with psycopg.connect(owner_dsn) as conn:  # the e-mails cannot be recorded
        conn.execute(
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'panne simulée'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fault BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fault()"
        )
    with Clerk("factures_envoyer", "Envoyer"):
        dag_run = run_dag("factures_envoyer")

    # The invoices are sent and the report says so; the delivery's failure fails the chunk task
    # that ended the run's work (and its retry), whichever of them it was, then rapport, after
    # writing the report.
    assert outcome(dag_run) == ONE_CHUNK_TASK_THEN_RAPPORT_FAILED
    assert note_writers(dag_run) == ["rapport"]
    run = last_run(postier_env)
    assert run["status"] == "terminee" and run["report"]["compteurs"]["traitees"] == 1
    assert note(dag_run) == expected_note(run, "1 sélectionnée(s) · 1 traitée(s)")


def test_a_run_refusing_every_invoice_is_reported_once(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, insert_customer(conn, emails=[]), number="KO-1")
    published = count_publishes(monkeypatch)
    dag_run = run_dag("factures_preparer_envoi")

    # The chunk task that processed the chunk wrote the report and failed with it (the others
    # found nothing to do and its report written); rapport only said it again.
    assert outcome(dag_run) == ONE_CHUNK_TASK_THEN_RAPPORT_FAILED
    run = last_run(postier_env)
    assert published == [run["id"]]
    written = json.loads(Path(run["report"]["rapport"]).with_suffix(".json").read_text())
    assert written["compteurs"]["refusees"] == 1
    assert run["report"]["echec"] == "toutes les factures sélectionnées ont été refusées"
    assert note(dag_run).startswith("échec : toutes les factures")


def set_items(dsn: str, run_id: int, status: str) -> None:
    """Every item of the run in `status`, committed."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE run_items SET status = %s, done_at = now() WHERE run_id = %s", (status, run_id)
        )


def test_a_chunk_committing_after_the_report_was_written_has_it_written_again(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="LATE-1")
    assert run_dag("factures_preparer_envoi").state == "success"
    env = Environment(dsn=postier_env, home=database.home())
    run_id = last_run(postier_env)["id"]
    set_items(postier_env, run_id, run_store.PENDING)  # as before its chunk was processed

    with psycopg.connect(postier_env) as chunk:
        # The chunk's transaction records its outcome (done_at: the transaction's start) ...
        chunk.execute(
            "UPDATE run_items SET status = %s, done_at = now() WHERE run_id = %s",
            (run_store.DONE, run_id),
        )
        # ... while rapport, tired of waiting for the chunk tasks, writes the report ...
        with pytest.raises(reports.RunIncompleteError):
            write_report(env, run_id, again=False)
        chunk.commit()  # ... and commits after it.
    assert last_run(postier_env)["status"] == "en_erreur"

    # The chunk task ends with nothing pending: it writes the report that says so.
    assert write_report(env, run_id, again=False) is not None
    run = last_run(postier_env)
    assert run["status"] == "terminee" and run["report"]["compteurs"]["non_traitees"] == 0
    assert "| 1 | 1 | 0 | 0 | 0 |" in Path(run["report"]["rapport"]).read_text()


def test_two_tasks_ending_together_write_one_report(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="TWO-1")
    assert run_dag("factures_preparer_envoi").state == "success"
    env = Environment(dsn=postier_env, home=database.home())
    run_id = last_run(postier_env)["id"]
    # As if the report had been written while the run's chunk was still at work.
    set_items(postier_env, run_id, run_store.PENDING)
    with pytest.raises(reports.RunIncompleteError):
        write_report(env, run_id, again=False)
    first = last_run(postier_env)["finished_at"]
    set_items(postier_env, run_id, run_store.DONE)
    barrier = threading.Barrier(2)
    written: list[dict[str, Any] | None] = []

    def end_task() -> None:
        barrier.wait()
        written.append(write_report(env, run_id, again=False))

    threads = [threading.Thread(target=end_task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(w is None for w in written) == [False, True]
    run = last_run(postier_env)
    again = run["finished_at"]
    assert again > first and run["status"] == "terminee"
    # A retry of the task that wrote it, nothing having changed since: nothing written.
    assert write_report(env, run_id, again=False) is None
    assert last_run(postier_env)["finished_at"] == again


@pytest.fixture
def mailed(  # type: ignore[no-untyped-def]
    postier_env,
    smtp_server: SmtpServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> SmtpServer:
    """The sends' SMTP relay, and one invoice to send to a customer mailed at a@client.fr."""
    monkeypatch.setenv("POSTIER_SMTP_URL", smtp_server.url())
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn, emails=["a@client.fr"])
        insert_invoice(conn, customer, number="MAIL-1", send_state="PRET")
    return smtp_server


def send_left_to_deliver(run_dag, dsn: str, relay: SmtpServer) -> tuple[Environment, str]:  # type: ignore[no-untyped-def]
    """A send whose e-mail is pending (its relay was down) and whose report is not current (as
    if written while its chunk was still at work): its chunk tasks are yet to end it. Its
    environment, with the relay up again, and its reference."""
    relay.stop()
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    relay.start()
    env = Environment(dsn=dsn, home=database.home(), smtp=SmtpConfig.from_url(relay.url()))
    run_id = last_run(dsn)["id"]
    set_items(dsn, run_id, run_store.PENDING)
    with pytest.raises(reports.RunIncompleteError):
        write_report(env, run_id, again=False)
    set_items(dsn, run_id, run_store.DONE)
    ((ref,),) = read_rows(dsn, "SELECT external_id FROM runs WHERE id = %s", (run_id,))
    return env, ref


def deliverer(dsn: str) -> int | None:
    """The task marked in the run's row as the one that delivers it."""
    ((marked,),) = read_rows(dsn, "SELECT deliverer FROM runs ORDER BY id DESC LIMIT 1")
    return marked  # type: ignore[no-any-return]


def test_two_chunk_tasks_ending_together_deliver_once(run_dag, postier_env, mailed) -> None:  # type: ignore[no-untyped-def]
    env, ref = send_left_to_deliver(run_dag, postier_env, mailed)
    # As if no chunk task had ended the run yet.
    with psycopg.connect(postier_env) as conn:
        conn.execute("UPDATE runs SET deliverer = NULL")
    barrier = threading.Barrier(2)
    ended: list[int] = []

    def end_task(index: int) -> None:
        barrier.wait()
        # As `_end_run`: the task that ends it writes the report.
        if end_send(env, ref, index, CHUNK_TASKS):
            ended.append(index)
            write_report(env, ref, again=False)

    threads = [threading.Thread(target=end_task, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # One of the two delivered and reported, marked as the run's deliverer; the other ended.
    assert len(ended) == 1 and deliverer(postier_env) == ended[0]
    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]
    run = last_run(postier_env)
    assert run["status"] == "terminee" and run["report"]["courriels"]["envoyes"] == 1
    assert run["report"]["courriels"]["en_attente"] == 0


def test_only_the_marked_deliverer_delivers_again_whatever_its_xcoms(  # type: ignore[no-untyped-def]
    run_dag, postier_env, mailed
) -> None:
    env, ref = send_left_to_deliver(run_dag, postier_env, mailed)
    # The chunk task that ended the send is marked in the run's row, not only in its XComs
    # (which Airflow clears when its retry starts).
    marked = deliverer(postier_env)
    assert marked in range(CHUNK_TASKS)
    other = (marked + 1) % CHUNK_TASKS

    # Another chunk task ending later leaves the delivery to it, whether the deliverer's
    # attempt holds the run's delivery lock or not.
    with delivery_claim(env, ref, marked, CHUNK_TASKS) as claimed:
        assert claimed
        assert end_send(env, ref, other, CHUNK_TASKS) is False
    assert end_send(env, ref, other, CHUNK_TASKS) is False
    assert mailed.received == []

    # Its retry delivers what is pending.
    assert end_send(env, ref, marked, CHUNK_TASKS) is True
    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]
    assert deliverer(postier_env) == marked


def test_the_deliverers_retry_waits_for_its_cut_off_attempt_then_delivers(  # type: ignore[no-untyped-def]
    run_dag, postier_env, mailed, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, ref = send_left_to_deliver(run_dag, postier_env, mailed)
    marked = deliverer(postier_env)
    assert marked is not None
    held, release = threading.Event(), threading.Event()

    def cut_off_attempt() -> None:
        # The deliverer's attempt on a host that died: its PostgreSQL backend, which holds the
        # run's delivery lock, lingers until TCP keepalive (here: one second).
        with delivery_claim(env, ref, marked, CHUNK_TASKS):
            held.set()
            release.wait()

    attempt = threading.Thread(target=cut_off_attempt)
    attempt.start()
    held.wait()
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    try:
        # Its retry waits for the lock, then delivers: not a green run with nothing delivered.
        assert end_send(env, ref, marked, CHUNK_TASKS) is True
    finally:
        release.set()
        attempt.join()
    assert time.monotonic() - started >= 0.9
    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]

    # Held past the wait (POSTIER_DELIVERY_LOCK_WAIT_SECONDS, 300 unless told): the retry fails
    # in French, and Airflow retries it.
    monkeypatch.setenv("POSTIER_DELIVERY_LOCK_WAIT_SECONDS", "0.3")
    with delivery_claim(env, ref, marked, CHUNK_TASKS):
        started = time.monotonic()
        with pytest.raises(mailing.DeliveryLockTimeout, match="après 0.3 s .* relancée"):
            end_send(env, ref, marked, CHUNK_TASKS)
        assert time.monotonic() - started < 5


def test_a_mark_naming_a_chunk_task_the_run_no_longer_has_is_taken_over(  # type: ignore[no-untyped-def]
    run_dag, postier_env, mailed
) -> None:
    env, ref = send_left_to_deliver(run_dag, postier_env, mailed)
    # Marked by part 3, then POSTIER_WORKERS lowered to 2 and the run cleared: no part 3.
    with psycopg.connect(postier_env) as conn:
        conn.execute("UPDATE runs SET deliverer = 3")

    # The first remaining task to get the lock delivers, and is the run's deliverer now.
    assert end_send(env, ref, 1, 2) is True
    assert deliverer(postier_env) == 1
    assert end_send(env, ref, 0, 2) is False
    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]


def test_a_report_written_again_after_a_delivery_says_what_was_delivered(  # type: ignore[no-untyped-def]
    run_dag, postier_env, mailed
) -> None:
    # The relay down: the send succeeds, its report says its e-mail is pending.
    mailed.stop()
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    mailed.start()
    run = last_run(postier_env)
    assert run["report"]["courriels"]["en_attente"] == 1

    # rapport cleared (or the deliverer retried, or the run cleared): the e-mail goes, and the
    # report is written again though no invoice changed.
    env = Environment(dsn=postier_env, home=database.home(), smtp=SmtpConfig.from_url(mailed.url()))
    deliver_send(env, run["id"])
    assert write_report(env, run["id"], again=False) is not None

    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]
    mails = last_run(postier_env)["report"]["courriels"]
    assert (mails["envoyes"], mails["en_attente"]) == (1, 0)
    # Nothing more delivered: not written again.
    assert write_report(env, run["id"], again=False) is None


def test_a_send_run_again_delivers_nothing_twice(run_dag, postier_env, mailed) -> None:  # type: ignore[no-untyped-def]
    # The same Airflow run twice (same logical date and run_after: same run id), as a « Clear »
    # of its tasks.
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)
    runs = [
        run_dag(
            "factures_envoyer",
            mark_success_pattern="confirmation",
            logical_date=when,
            run_after=when,
        )
        for _ in range(2)
    ]

    assert [r.state for r in runs] == ["success", "success"]
    assert task_states(runs[1])["traiter_paquet[0]"] == "success"
    assert [r.rcpt_tos for r in mailed.received] == [["a@client.fr"]]
    run = last_run(postier_env)
    assert run["id"] == 1 and run["report"]["courriels"]["envoyes"] == 1
    assert read_rows(postier_env, "SELECT count(*) FROM outbox") == [(1,)]


def test_of_several_chunk_tasks_the_first_to_leave_nothing_writes_the_report(  # type: ignore[no-untyped-def]
    run_dag, postier_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 chunks of 2 invoices for 4 chunk tasks: `dag.test()` runs them one after the other, the
    # first does every chunk, the next three find nothing left to process.
    monkeypatch.setattr(run_store, "MIN_CHUNK", 2)
    monkeypatch.setattr(run_store, "CHUNK_S", 2 * run_store.INVOICE_S)
    monkeypatch.setenv("POSTIER_WORKERS", "4")
    with psycopg.connect(postier_env) as conn:
        for n in range(9):
            insert_invoice(conn, number=f"MANY-{n}")
    published = count_publishes(monkeypatch)
    dag_run = run_dag("factures_preparer_envoi")

    assert dag_run.state == "success"
    states = task_states(dag_run)
    assert [states[f"traiter_paquet[{i}]"] for i in range(4)] == ["success"] * 4
    assert states["rapport"] == "skipped"
    run = last_run(postier_env)
    assert published == [run["id"]]
    assert run["report"]["compteurs"]["traitees"] == 9
    # The tasks that found it written put its note again (as a retry of the writer would: a
    # retry starts without its XComs): whichever ends last, the run's note is the report's.
    assert note_writers(dag_run) == ["traiter_paquet"] * 4
    assert note(dag_run) == expected_note(run, "9 sélectionnée(s) · 9 traitée(s)")


def block_the_print_file() -> Path:
    """Where the first run's print file goes, a folder that is not empty: the file cannot be put
    there."""
    blocked = database.home() / "runs" / "000001-factures_imprimer" / "impression.pdf"
    (blocked / "occupé").mkdir(parents=True)
    return blocked


def test_a_print_file_that_cannot_be_made_fails_the_run_with_the_report_of_rapport(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="IMP-KO", send_state="PRET")
    block_the_print_file()
    dag_run = run_dag("factures_imprimer", {"sans_date_edition": True})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert (states["finaliser"], states["rapport"]) == ("failed", "failed")
    assert note_writers(dag_run) == ["rapport"]
    run = last_run(postier_env)
    assert run["id"] == 1 and run["status"] == "en_erreur"
    assert run["report"]["compteurs"]["traitees"] == 1
    assert note(dag_run).startswith("incomplète : factures ou fichier d'impression non traités")


def test_rapport_run_again_after_the_print_file_failed_gives_the_same_reason(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="IMP-KO", send_state="PRET")
    block_the_print_file()
    assert run_dag("factures_imprimer", {"sans_date_edition": True}).state == "failed"
    run = last_run(postier_env)

    # rapport retried or cleared: the report is written and nothing changed since, so it reads
    # it (as it would one finaliser wrote) and fails with the reason the report gives.
    env = Environment(dsn=postier_env, home=database.home())
    assert write_report(env, run["id"], again=False) is None
    with pytest.raises(
        reports.RunIncompleteError,
        match=r"^0 facture\(s\) non traitée\(s\), fichier d'impression non produit : ",
    ):
        reports.written_report(env, run["id"])
    # The run lists show why it failed.
    assert run["report"]["echec"] == "fichier d'impression non produit"


def test_finaliser_run_again_once_the_print_file_can_be_made_writes_the_report_again(  # type: ignore[no-untyped-def]
    run_dag, postier_env
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="IMP-KO", send_state="PRET")
    blocked = block_the_print_file()
    # The same Airflow run twice (same logical date and run_after: same run id), as a « Clear »
    # of its tasks: the second time only finaliser has anything to do.
    when = datetime(2026, 12, 1, 12, tzinfo=UTC)
    first = run_dag(
        "factures_imprimer", {"sans_date_edition": True}, logical_date=when, run_after=when
    )
    assert first.state == "failed" and last_run(postier_env)["status"] == "en_erreur"
    shutil.rmtree(blocked)

    dag_run = run_dag(
        "factures_imprimer", {"sans_date_edition": True}, logical_date=when, run_after=when
    )

    assert dag_run.state == "success"
    assert task_states(dag_run)["finaliser"] == "success"
    run = last_run(postier_env)
    assert run["id"] == 1 and run["status"] == "terminee" and "echec" not in run["report"]
    print_file = next(f for f in run["report"]["fichiers"] if f.endswith("impression.pdf"))
    assert Path(print_file).read_bytes().startswith(b"%PDF")
    assert f"`{print_file}`" in Path(run["report"]["rapport"]).read_text()
    assert note(dag_run) == expected_note(run, "1 sélectionnée(s) · 1 traitée(s)")
