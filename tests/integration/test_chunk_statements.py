"""A chunk's database work is a fixed number of statements, whatever its number of invoices.

Counted on the wire: libpq's trace of the chunk's own connection, each statement the server
executes being one `Bind` (extended protocol) or `Query` (simple protocol) message from us. A
statement per invoice (`executemany` sends one `Bind` per row) costs the server a statement
execution per invoice and the chunk that much Python per row.
"""

from __future__ import annotations

import ctypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from psycopg.pq import Trace

from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run


@dataclass(frozen=True)
class TracedEnvironment(Environment):
    """Its connections write libpq's trace of what they send to `trace`."""

    trace: str = ""

    def connect(self) -> psycopg.Connection[Any]:
        conn = super().connect()
        conn.pgconn.trace(os.open(self.trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        return conn


def trace_of_one_chunk(db_dsn: str, home: Path, treatment: str) -> tuple[int, list[list[str]]]:
    """(the run's id, the fields of each line of libpq's trace) of a run's only chunk."""
    env = Environment(dsn=db_dsn, home=home, workers=1)
    summary = start_run(env, treatment, {}, "jmartin", f"{treatment}/{uuid.uuid4().hex[:8]}")
    assert summary["chunks"] == [0]
    trace = home.parent / f"trace-{uuid.uuid4().hex[:8]}.txt"
    traced = TracedEnvironment(dsn=db_dsn, home=home, workers=1, trace=str(trace))
    process_chunk(traced, summary["run_id"], 0)
    ctypes.CDLL(None).fflush(None)  # libpq writes its trace through a stdio stream
    return summary["run_id"], [line.split("\t") for line in trace.read_text().splitlines()]


def statements_of_one_chunk(db_dsn: str, home: Path, treatment: str) -> tuple[int, int]:
    """(invoices processed, statements executed) by the run's only chunk."""
    run_id, sent = trace_of_one_chunk(db_dsn, home, treatment)
    executed = sum(1 for f in sent if f[0] == "F" and len(f) > 2 and f[2] in ("Bind", "Query"))
    with psycopg.connect(db_dsn) as conn:
        done = conn.execute(
            "SELECT count(*) FROM run_items WHERE run_id = %s AND status = 'traitee'",
            (run_id,),
        ).fetchone()
    assert done is not None
    return int(done[0]), executed


@pytest.mark.parametrize("channel", ["portail", "papier"])
def test_prepare_and_send_chunks_execute_as_many_statements_for_12_invoices_as_for_2(
    db_dsn: str, tmp_path: Path, channel: str
) -> None:
    counts: dict[str, list[tuple[int, int]]] = {"prepare": [], "send": []}
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        customer = insert_customer(conn, channel=channel)
    for invoices in (2, 12):
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            for _ in range(invoices):
                insert_invoice(conn, customer)
        counts["prepare"].append(
            statements_of_one_chunk(db_dsn, tmp_path / "home", "factures_preparer_envoi")
        )
        counts["send"].append(
            statements_of_one_chunk(db_dsn, tmp_path / "home", "factures_envoyer")
        )
    for (small, few), (big, many) in counts.values():
        assert (small, big) == (2, 12)  # every invoice prepared, then sent
        assert many == few


def transaction_commands_of_one_chunk(db_dsn: str, home: Path, treatment: str) -> list[str]:
    """The transaction commands (BEGIN, COMMIT, SAVEPOINT…) the run's only chunk sent."""
    _, sent = trace_of_one_chunk(db_dsn, home, treatment)
    queries = [f[3].strip(' "').split()[0] for f in sent if f[0] == "F" and f[2] == "Query"]
    return [q for q in queries if q in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")]


def test_a_chunk_and_its_progress_line_are_one_transaction(db_dsn: str, tmp_path: Path) -> None:
    # The progress the chunk's log line shows is read in the chunk's own transaction, not in
    # one of its own after it (two round trips fewer per chunk).
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        customer = insert_customer(conn, channel="papier")
        for _ in range(3):
            insert_invoice(conn, customer)
    for treatment in ("factures_preparer_envoi", "factures_envoyer"):
        commands = transaction_commands_of_one_chunk(db_dsn, tmp_path / "home", treatment)
        assert commands.count("BEGIN") == 1 and commands.count("COMMIT") == 1, commands
        assert commands[0] == "BEGIN" and commands[-1] == "COMMIT", commands
