"""Chunk tasks: one per worker slot, each taking the run's chunks until none is left.

A chunk is claimed for as long as its task works on it (a session advisory lock on the task's
claims connection): a chunk another task holds is left to it, then waited for before the task
ends, a killed task's claim dies with its connection, a chunk that raises fails its task after
the other chunks, and a task that starts when everything is done finds nothing to do. Every
invoice is processed exactly once.
"""

from __future__ import annotations

import logging
import re
import threading
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoices, read_rows

from postier.errors import PostierError
from postier.pipeline import runs
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_part, start_run
from postier.store import runs as run_store

HOLD = "factures_mettre_en_attente"
CHUNK_LINE = re.compile(r"Paquet (\d+) : (\d+) facture")
PROGRESS = re.compile(r"avancement (\d+/\d+)")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 2 invoices, so that a few invoices make many chunks."""
    monkeypatch.setattr(run_store, "MIN_CHUNK", 2)
    monkeypatch.setattr(run_store, "CHUNK_S", 2 * run_store.INVOICE_S)
    return 2


def ready_invoices(dsn: str, count: int, prefix: str = "CT", state: str = "PRET") -> list[str]:
    with psycopg.connect(dsn) as conn:
        customer = insert_customer(conn)
        numbers = [f"{prefix}-{n:03d}" for n in range(count)]
        insert_invoices(conn, [(customer, 1, {"number": n}) for n in numbers], send_state=state)
    return numbers


def item_states(dsn: str, run_id: int) -> dict[int, set[str]]:
    """Chunk → the statuses of its items."""
    query = "SELECT chunk, array_agg(DISTINCT status) FROM run_items WHERE run_id = %s GROUP BY 1"
    return {chunk: set(statuses) for chunk, statuses in read_rows(dsn, query, (run_id,))}


def held_once(dsn: str) -> tuple[dict[str, str], tuple[int, int]]:
    """Each invoice's state, and (exchange rows, invoices with one): a second change would show."""
    with psycopg.connect(dsn) as conn:
        states = dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())
        logs = conn.execute("SELECT count(*), count(DISTINCT invoice_id) FROM exchanges").fetchone()
    assert logs is not None
    return states, (int(logs[0]), int(logs[1]))


def chunk_lines(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [int(m.group(1)) for r in caplog.records if (m := CHUNK_LINE.match(r.getMessage()))]


def test_a_chunk_another_task_holds_is_waited_for_and_a_killed_tasks_chunk_is_taken_up(
    postier_env: str, tmp_path: Path, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = ready_invoices(postier_env, 10)
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=2)
    started = start_run(env, HOLD, {}, "jmartin", "test/held")
    run_id = started["run_id"]
    assert started["chunks"] == [0, 1, 2, 3, 4]
    assert started["parts"] == [{"part": 0, "parts": 2}, {"part": 1, "parts": 2}]

    # Another task is in the middle of chunk 1 (or was cut off from Airflow while holding it).
    other = psycopg.connect(postier_env, autocommit=True)
    assert run_store.claim_chunk(other, run_id, 1)
    # Its share (0, 2, 4), then 3; then it waits for 1, and fails rather than end before it.
    monkeypatch.setattr(runs, "HELD_CHUNK_WAIT_S", 1.0)
    with pytest.raises(PostierError, match="paquet 1 toujours tenu par une autre tâche"):
        process_part(env, run_id, 0, 2)
    assert item_states(postier_env, run_id) == {
        0: {"traitee"},
        1: {"a_traiter"},
        2: {"traitee"},
        3: {"traitee"},
        4: {"traitee"},
    }
    # The other task's retry starts while the attempt it replaces still holds chunk 1: it
    # waits, and ends only once that attempt is killed (its connection and claim gone) and it
    # has done chunk 1 itself.
    monkeypatch.setattr(runs, "HELD_CHUNK_WAIT_S", 60.0)
    outcome: dict[str, dict[str, int]] = {}
    retry = threading.Thread(target=lambda: outcome.update(counts=process_part(env, run_id, 1, 2)))
    retry.start()
    retry.join(2.0)
    assert retry.is_alive() and item_states(postier_env, run_id)[1] == {"a_traiter"}
    other.close()
    retry.join(30.0)
    assert not retry.is_alive()
    assert outcome["counts"]["a_traiter"] == 0 and outcome["counts"]["traitee"] == 10
    states, logs = held_once(postier_env)
    assert states == dict.fromkeys(numbers, "EN_ATTENTE")
    assert logs == (10, 10)


def test_one_slot_runs_every_chunk_in_its_first_task_and_the_second_finds_nothing(
    postier_env: str, tmp_path: Path, small_chunks: int, caplog: pytest.LogCaptureFixture
) -> None:
    ready_invoices(postier_env, 9)
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=2)
    started = start_run(env, HOLD, {}, "jmartin", "test/one-slot")
    with caplog.at_level(logging.INFO, logger="postier.pipeline.runs"):
        first = process_part(env, started["run_id"], 0, 2)
        done_by_first = chunk_lines(caplog)
        first_lines = [r.getMessage() for r in caplog.records]
        caplog.clear()
        second = process_part(env, started["run_id"], 1, 2)
    # Its own share first, then the other task's from the last.
    assert done_by_first == [0, 2, 4, 3, 1]
    # The progress of the whole run after each chunk, whichever chunk it was.
    progress = [m.group(1) for m in map(PROGRESS.search, first_lines) if m]
    assert len(progress) == 5 and progress[-1] == "9/9"
    assert [int(p.split("/")[0]) for p in progress] == sorted(
        int(p.split("/")[0]) for p in progress
    )
    assert chunk_lines(caplog) == []  # nothing left for the second task
    assert first == second and first["traitee"] == 9
    assert any("Part 1/2 : 0 paquet(s) traité(s)" in r.getMessage() for r in caplog.records)
    assert held_once(postier_env)[1] == (9, 9)


@dataclass(frozen=True)
class CountedEnvironment(Environment):
    """Its connections note the text of each statement they execute (`sent`)."""

    sent: list[str] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[Any]:
        conn = super().connect()
        original = conn.execute

        def execute(query: Any, params: Any = None, **kwargs: Any) -> Any:
            self.sent.append(" ".join(str(query).split()))
            return original(query, params, **kwargs)

        conn.execute = execute  # type: ignore[method-assign]
        return conn


def test_a_large_runs_progress_is_not_counted_over_all_its_invoices_after_each_chunk(
    postier_env: str, tmp_path: Path, small_chunks: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line gives the run's progress after each chunk; the task counts the run's
    items a fixed number of times, not after every chunk (which made a 30,000-invoice run's
    counting quadratic: 270 counts of 30,000 items)."""
    ready_invoices(postier_env, 60)
    env = CountedEnvironment(dsn=postier_env, home=tmp_path / "home", workers=1)
    started = start_run(env, HOLD, {}, "jmartin", "test/progress")
    assert len(started["chunks"]) == 30
    env.sent.clear()
    with caplog.at_level(logging.INFO, logger="postier.pipeline.runs"):
        counts = process_part(env, started["run_id"], 0, 1)
    assert counts["traitee"] == 60
    progress = [m.group(1) for r in caplog.records if (m := PROGRESS.search(r.getMessage()))]
    assert progress == [f"{2 * n}/60" for n in range(1, 31)]
    counted = [q for q in env.sent if "count(" in q and "FROM run_items" in q]
    assert len(counted) == 2, counted  # the first progress line's, the task's final counts


def test_tasks_running_together_process_each_chunk_once(
    postier_env: str, tmp_path: Path, small_chunks: int, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = ready_invoices(postier_env, 40)
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=2)
    started = start_run(env, HOLD, {}, "jmartin", "test/together")
    assert len(started["chunks"]) == 20
    go = threading.Barrier(2)
    errors: list[BaseException] = []

    def task(part: int) -> None:
        go.wait()
        try:
            process_part(env, started["run_id"], part, 2)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    with caplog.at_level(logging.INFO, logger="postier.pipeline.runs"):
        threads = [threading.Thread(target=task, args=(part,)) for part in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors
    # Each chunk processed by one task only, once; none left.
    assert sorted(chunk_lines(caplog)) == list(range(20))
    # Each task's progress counts the other's chunks too. It is read inside the chunk's own
    # transaction (one BEGIN and one COMMIT a chunk): two chunks committing at the same moment
    # do not see each other, so the last line may lack the other task's chunk in flight (2
    # invoices here), never more.
    progress = [m.group(1) for r in caplog.records if (m := PROGRESS.search(r.getMessage()))]
    done = [int(line.split("/")[0]) for line in progress]
    assert len(progress) == 20 and {line.split("/")[1] for line in progress} == {"40"}
    assert max(done) >= 40 - 2
    states, logs = held_once(postier_env)
    assert states == dict.fromkeys(numbers, "EN_ATTENTE")
    assert logs == (40, 40)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("RAISE EXCEPTION 'panne simulée'", "panne simulée"),
        # The chunk's backend ends alone: the next chunks go on a new connection.
        ("PERFORM pg_terminate_backend(pg_backend_pid())", "terminating connection"),
    ],
    ids=["raises", "connection-lost"],
)
def test_a_chunk_that_raises_fails_its_task_after_the_other_chunks_and_the_retry_ends_it(
    postier_env: str, owner_dsn: str, tmp_path: Path, small_chunks: int, fault: str, message: str
) -> None:
    numbers = ready_invoices(postier_env, 6, prefix="F")
    with psycopg.connect(owner_dsn) as conn:  # DDL: the owner role
        # A crash in chunk 1 (F-002), on its first attempt only.
        conn.execute("CREATE SEQUENCE fault_once")
        conn.execute(
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.number = 'F-002' AND nextval('fault_once') = 1 THEN "
            f"{fault}; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fault BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION fault()"
        )
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=1)
    started = start_run(env, HOLD, {}, "jmartin", "test/raises")
    run_id = started["run_id"]
    assert started["parts"] == [{"part": 0, "parts": 1}]

    with pytest.raises(psycopg.Error, match=message):
        process_part(env, run_id, 0, 1)
    # The task failed with the chunk's error, once its other chunks were done.
    assert item_states(postier_env, run_id) == {0: {"traitee"}, 1: {"a_traiter"}, 2: {"traitee"}}
    # Airflow's retry finds only the unfinished chunk.
    counts = process_part(env, run_id, 0, 1)
    assert counts["traitee"] == 6 and counts["a_traiter"] == 0
    states, logs = held_once(postier_env)
    assert states == dict.fromkeys(numbers, "EN_ATTENTE")
    assert logs == (6, 6)


def _peak_bytes(env: Environment, count: int, name: str) -> int:
    """Python's peak allocation over a prepare task that processes `count` / 2 chunks."""
    ready_invoices(env.dsn, count, prefix=name, state="EN_ATTENTE")
    started = start_run(env, "factures_preparer_envoi", {}, "jmartin", f"test/{name}")
    with psycopg.connect(env.dsn) as conn:
        # Only this batch: earlier ones are prepared already (PRET), so not selected.
        assert conn.execute(
            "SELECT count(*) FROM run_items WHERE run_id = %s", (started["run_id"],)
        ).fetchone() == (count,)
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    process_part(env, started["run_id"], 0, 1)
    return tracemalloc.get_traced_memory()[1] - before


def test_a_task_of_many_chunks_keeps_nothing_from_one_chunk_to_the_next(
    postier_env: str, tmp_path: Path, small_chunks: int
) -> None:
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=1)
    tracemalloc.start()
    try:
        _peak_bytes(env, 2, "WARM")  # imports, fonts, the signing key: once per process
        two = _peak_bytes(env, 4, "TWO")
        twelve = _peak_bytes(env, 24, "TWELVE")
    finally:
        tracemalloc.stop()
    # 12 chunks peak where 2 do: what a chunk allocates is freed before the next one.
    assert twelve < two * 1.5, (two, twelve)


def test_a_run_says_the_chunk_tasks_the_dag_maps_even_with_fewer_chunks(
    postier_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ready_invoices(postier_env, 1)
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=4)
    with caplog.at_level(logging.INFO, logger="postier"):
        started = start_run(env, HOLD, {}, "jmartin", "test/few")

    # One chunk, but the DAG maps one chunk task per worker slot: 4 tasks, as the log says.
    assert started["chunks"] == [0]
    assert started["parts"] == [{"part": part, "parts": 4} for part in range(4)]
    assert "1 paquet(s), 4 tâche(s) de paquets" in caplog.text
