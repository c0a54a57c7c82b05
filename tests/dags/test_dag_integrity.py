"""DAG integrity: every DAG imports cleanly, without touching anything at parse time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dag_files import DAGS, ROOT, load_dag

from postier.airflow.chorus_returns_dag import DAG_ID as CHORUS_RETURNS
from postier.airflow.dag_factory import IMPLEMENTED
from postier.airflow.lifecycle_dag import DAG_ID as LIFECYCLE
from postier.domain.treatments import CATALOGUE, FINALIZED

DAG_IDS = [t.value for t in IMPLEMENTED]
#: Scheduled DAGs outside the treatment catalogue.
OTHER_DAG_IDS = [CHORUS_RETURNS, LIFECYCLE]


def test_there_is_one_dag_file_per_implemented_treatment() -> None:
    assert sorted(p.stem for p in DAGS.glob("*.py")) == sorted(DAG_IDS + OTHER_DAG_IDS)


def test_dagbag_has_no_import_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(DAG_IDS + OTHER_DAG_IDS)


def test_parsing_touches_no_database_driver_nor_network() -> None:
    # Parse every DAG in a fresh interpreter where sockets are forbidden.
    code = (
        "import socket, sys, runpy, glob\n"
        "def refuse(*a, **k): raise RuntimeError('network at parse time')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        f"[runpy.run_path(p) for p in sorted(glob.glob('{DAGS}/*.py'))]\n"
        "heavy = [m for m in ('psycopg', 'reportlab', 'pyhanko', 'paramiko', 'pandas') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env_ok = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert env_ok.returncode == 0, env_ok.stderr[-2000:]


@pytest.mark.parametrize("dag_id", DAG_IDS + OTHER_DAG_IDS)
def test_dag_is_documented_tagged_and_retried(dag_id: str) -> None:
    dag = load_dag(dag_id)
    assert dag.doc_md and "Relancer" in dag.doc_md
    assert "postier" in dag.tags
    assert all(task.retries >= 1 for task in dag.tasks if task.task_id != "confirmation")
    assert not dag.catchup


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_params_match_the_catalogue(dag_id: str) -> None:
    dag = load_dag(dag_id)
    t = CATALOGUE[dag_id]  # type: ignore[index]
    if t.scheduled:
        assert dict(dag.params) == {}
        return
    etats = dag.params.get_param("etats")
    assert etats.value == [s.value for s in t.default_states]
    assert etats.schema["items"]["enum"] == [s.value for s in t.allowed_states]
    assert ("sans_date_edition" in dag.params) is t.print_switches
    assert ("mode" in dag.params) is (dag_id == "factures_imprimer")
    for name in ("lot_debut", "lot_fin", "date_facture_debut", "operateur_creation"):
        assert dag.params.get_param(name).schema["title"]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_task_graph_is_chunks_finalize_report(dag_id: str) -> None:
    dag = load_dag(dag_id)
    ids = {t.task_id for t in dag.tasks}
    # No task of its own for the selection: the chunk tasks (or the confirmation) start the run.
    expected = {"traiter_paquet", "rapport"}
    head: set[str] = set()
    t = CATALOGUE[dag_id]  # type: ignore[index]
    # Only a treatment that ends with a file of the whole run pays a task process to make it.
    last = "traiter_paquet"
    if t.id in FINALIZED:
        expected |= {"finaliser"}
        assert dag.get_task("finaliser").upstream_task_ids == {"traiter_paquet"}
        last = "finaliser"
    if CATALOGUE[dag_id].needs_confirmation:  # type: ignore[index]
        # The confirmation selects and shows what will be sent: no task process before it.
        expected |= {"confirmation"}
        assert dag.get_task("confirmation").upstream_task_ids == set()
        assert dag.get_task("traiter_paquet").upstream_task_ids == {"confirmation"}
        head = {"confirmation"}
    else:
        assert dag.get_task("traiter_paquet").upstream_task_ids == set()
    # A send's customer e-mails and PA deposits go after the chunks, never inside a definitive
    # send's transaction, but in no task of their own: the chunk task that ends the run's work
    # delivers, `rapport` after a failure. The report after a failure only: after the
    # confirmation too (a refused selection is reported), skipped without a task process when
    # the success path wrote the report.
    assert dag.get_task("rapport").upstream_task_ids == head | {last}
    assert dag.get_task("rapport").trigger_rule == "one_failed"
    assert ids == expected
    assert type(dag.get_task("traiter_paquet")).__name__.endswith("MappedOperator")
    assert [t.task_id for t in dag.leaves] == ["rapport"]
    # One root: no cycle.
    assert [t.task_id for t in dag.roots] == (sorted(head) or ["traiter_paquet"])


def test_a_run_maps_one_chunk_task_per_worker_slot_fixed_at_parse_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTIER_WORKERS", "3")
    chunks = load_dag("factures_preparer_envoi").get_task("traiter_paquet")
    assert chunks._get_specified_expand_input().value == {"part": [0, 1, 2]}
    assert chunks.partial_kwargs["op_kwargs"] == {"parts": 3}


def test_a_bad_worker_slot_count_is_the_dag_files_import_error_in_french(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("POSTIER_WORKERS", "0")
    bag = DagBag(dag_folder=str(DAGS / "factures_preparer_envoi.py"))
    # What Airflow's UI lists as the file's import error (not a silent single chunk task).
    assert bag.dag_ids == []
    [error] = bag.import_errors.values()
    assert "POSTIER_WORKERS « 0 » invalide : un nombre entier au moins égal à 1" in error


def test_the_retries_and_the_confirmation_wait_are_read_when_the_dag_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTIER_TASK_RETRIES", "3")
    monkeypatch.setenv("POSTIER_RETRY_DELAY_SECONDS", "7")
    monkeypatch.setenv("POSTIER_CONFIRMATION_MINUTES", "15")
    for dag_id in ("factures_envoyer", CHORUS_RETURNS, LIFECYCLE):
        task = next(t for t in load_dag(dag_id).tasks if t.task_id != "confirmation")
        assert (task.retries, task.retry_delay.total_seconds()) == (3, 7)
    confirmation = load_dag("factures_envoyer").get_task("confirmation")
    assert confirmation.response_timeout.total_seconds() == 15 * 60


@pytest.mark.parametrize(
    ("name", "value", "dag_id"),
    [
        ("POSTIER_TASK_RETRIES", "deux", "factures_preparer_envoi"),
        ("POSTIER_RETRY_DELAY_SECONDS", "-30", CHORUS_RETURNS),
        ("POSTIER_TASK_RETRIES", "-1", LIFECYCLE),
        ("POSTIER_CONFIRMATION_MINUTES", "0", "factures_envoyer"),
    ],
)
def test_a_bad_retry_or_confirmation_setting_is_the_dag_files_import_error_in_french(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, dag_id: str
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
    # What Airflow's UI lists as the file's import error, not Python's English ValueError.
    assert bag.dag_ids == []
    [error] = bag.import_errors.values()
    assert f"{name} « {value} » invalide : un nombre entier au moins égal à" in error


def test_a_prepare_then_send_pays_only_the_confirmation_around_its_chunks() -> None:
    # Nothing around a prepare's chunks (they select); a send's confirmation selects and asks
    # (no task process while it waits): no « Finaliser » where there is no print file, the
    # e-mails and PA deposits made and the report written by the chunk task that ends the run
    # (`rapport` only runs after a failure).
    around = [
        sorted(
            t.task_id
            for t in load_dag(dag_id).tasks
            if t.task_id != "traiter_paquet" and t.trigger_rule != "one_failed"
        )
        for dag_id in ("factures_preparer_envoi", "factures_envoyer")
    ]
    assert around == [[], ["confirmation"]]


def test_a_prepare_then_send_run_no_report_task(run_dag, postier_env) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    from builders import insert_invoice, read_rows
    from hitl import Clerk

    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="CYCLE-1")
    prepared = run_dag("factures_preparer_envoi")
    with Clerk("factures_envoyer", "Envoyer"):
        sent = run_dag("factures_envoyer")

    assert (prepared.state, sent.state) == ("success", "success")
    ran = [
        sorted(ti.task_id for ti in dag_run.get_task_instances() if ti.state != "skipped")
        for dag_run in (prepared, sent)
    ]
    # One chunk task per worker slot (4 here), none of them `rapport`.
    assert ran == [["traiter_paquet"] * 4, ["confirmation"] + ["traiter_paquet"] * 4]
    assert read_rows(postier_env, "SELECT status FROM runs ORDER BY id") == [
        ("terminee",),
        ("terminee",),
    ]
    # `rapport` skipped by the chunk task that wrote the report, before that task ended: the
    # scheduler can end the run at the loop that sees the task's end, without settling
    # `rapport`'s trigger rule first.
    for dag_run in (prepared, sent):
        tis = dag_run.get_task_instances()
        [report] = [ti for ti in tis if ti.task_id == "rapport"]
        chunk_ends = [ti.end_date for ti in tis if ti.task_id == "traiter_paquet"]
        assert report.state == "skipped" and report.end_date < max(chunk_ends)


@pytest.mark.parametrize("dag_id", DAG_IDS + OTHER_DAG_IDS)
def test_a_task_pushes_its_summary_as_one_xcom(dag_id: str) -> None:
    # A task returning a dict pushes each key as an XCom of its own besides the dict unless told
    # not to: one more api-server request each (a chunk: 4), which nothing reads.
    pushing_keys = [t.task_id for t in load_dag(dag_id).tasks if t.multiple_outputs]
    assert pushing_keys == []


def test_nightly_send_is_paused_on_creation_and_runs_the_last_day_of_the_month() -> None:
    dag = load_dag("factures_envoi_nocturne")
    assert dag.is_paused_upon_creation is True
    from airflow.timetables.trigger import CronTriggerTimetable
    from pendulum import datetime

    core = CronTriggerTimetable(dag.timetable.expression, timezone="Europe/Paris")
    after = core._get_next(datetime(2026, 2, 3, tz="Europe/Paris"))
    assert after.in_timezone("Europe/Paris").isoformat() == "2026-02-28T22:00:00+01:00"
