"""How a run's selection is cut into chunks: in selection order, as many as the workers (or a
multiple), sharing the expected work evenly: no slot idles while another ends a long chunk."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoices, read_rows

from postier.pipeline.context import Environment
from postier.pipeline.runs import share_order, start_run
from postier.store.runs import CHUNK_S, INVOICE_S, LINE_COST, MIN_CHUNK


def test_chunks_share_the_expected_work_evenly_in_selection_order(
    postier_env: str, tmp_path: Path
) -> None:
    # 200 invoices: the first 60 long (30 lines), then 140 of one line. Cut by count, the first
    # chunk would carry 60 long invoices and the second none.
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn)
        insert_invoices(
            conn, [(customer, 30 if n < 60 else 1, {"number": f"CH-{n:03d}"}) for n in range(200)]
        )
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=2)
    started = start_run(env, "factures_preparer_envoi", {}, "jmartin", "test/chunks")

    assert started["chunks"] == [0, 1]
    with psycopg.connect(postier_env) as conn:
        rows = conn.execute(
            "SELECT i.number, ri.chunk, (SELECT count(*) FROM invoice_lines l"
            " WHERE l.invoice_id = i.id) FROM run_items ri JOIN invoices i ON i.id = ri.invoice_id"
            " WHERE ri.run_id = %s ORDER BY ri.position",
            (started["run_id"],),
        ).fetchall()
    numbers = [r[0] for r in rows]
    assert numbers == sorted(numbers)
    chunk_of = [r[1] for r in rows]
    assert chunk_of == sorted(chunk_of)  # contiguous, chunk 0 first
    cost = {0: 0.0, 1: 0.0}
    for _number, chunk, lines in rows:
        cost[chunk] += 1 + LINE_COST * lines
    # Even within one long invoice's cost; by count (100 / 100) they would differ by 34.8.
    assert abs(cost[0] - cost[1]) <= 1 + LINE_COST * 30
    assert chunk_of.count(0) < 100 < chunk_of.count(1)


def test_a_small_run_is_cut_evenly_and_an_empty_one_not_at_all(
    postier_env: str, tmp_path: Path
) -> None:
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn)
        insert_invoices(conn, [(customer, 1, {"number": f"SM-{n:03d}"}) for n in range(150)])
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=2)
    # 150 invoices on 2 workers: 75 + 75, not a chunk of 100 then one of 50.
    started = start_run(env, "factures_preparer_envoi", {}, "jmartin", "test/small")
    assert started["chunks"] == [0, 1]
    with psycopg.connect(postier_env) as conn:
        sizes = conn.execute(
            "SELECT chunk, count(*) FROM run_items WHERE run_id = %s GROUP BY chunk ORDER BY 1",
            (started["run_id"],),
        ).fetchall()
    assert sizes == [(0, 75), (1, 75)]
    assert start_run(env, "factures_envoyer", {}, "jmartin", "test/empty")["chunks"] == []


@pytest.mark.parametrize(
    ("count", "workers"),
    [(1, 2), (99, 1), (150, 3), (450, 2), (2_500, 1), (2_500, 2), (2_500, 3), (2_500, 8)],
)
def test_every_invoice_is_in_one_chunk_of_seconds_of_work_and_every_slot_has_a_task(
    postier_env: str, tmp_path: Path, count: int, workers: int
) -> None:
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn)
        ids = insert_invoices(conn, [(customer, 1, {"number": f"N-{n:05d}"}) for n in range(count)])
    env = Environment(dsn=postier_env, home=tmp_path / "home", workers=workers)
    started = start_run(env, "factures_preparer_envoi", {}, "jmartin", "test/plan")

    rows = read_rows(
        postier_env,
        "SELECT ri.invoice_id, i.number, ri.chunk FROM run_items ri"
        " JOIN invoices i ON i.id = ri.invoice_id WHERE ri.run_id = %s ORDER BY ri.position",
        (started["run_id"],),
    )
    # Every selected invoice in exactly one chunk; in selection order, chunk 0 first.
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    chunk_of = [r[2] for r in rows]
    assert chunk_of == sorted(chunk_of)
    sizes = [chunk_of.count(c) for c in started["chunks"]]
    assert started["chunks"] == list(range(len(sizes))) and sum(sizes) == count
    # More chunks than workers: the run ends on a half chunk per worker, then a quarter chunk
    # per worker (the tasks end within a quarter chunk of each other).
    tail = 2 * workers if len(sizes) > workers > 1 else 0
    whole, halves, quarters = sizes[: len(sizes) - tail], sizes[-tail:][:workers], sizes[-workers:]
    if tail:
        assert all(abs(2 * h - whole[0]) <= 2 for h in halves)
        assert all(abs(4 * q - whole[0]) <= 4 for q in quarters)
    # Invoices alike: the other chunks alike; each a couple of seconds of work at most, and no
    # chunk smaller than MIN_CHUNK unless that is what gives every worker one.
    assert max(whole) - min(whole) <= 1
    assert max(sizes) * INVOICE_S <= max(CHUNK_S, MIN_CHUNK * INVOICE_S) * 1.01
    assert min(whole) >= MIN_CHUNK or len(sizes) <= workers
    if count >= MIN_CHUNK * workers:
        assert len(sizes) >= workers
    # Chunk tasks: one per worker slot, as the DAG maps them (`chunk_task_count`), each with a
    # chunk to start on starting on a chunk of its own (with fewer chunks, the others end at once).
    parts = started["parts"]
    assert len(parts) == workers
    assert {p["parts"] for p in parts} == {len(parts)}
    with_share = [p for p in parts if p["part"] < len(sizes)]
    firsts = {share_order(started["chunks"], p["part"], p["parts"])[0] for p in with_share}
    assert len(firsts) == len(with_share) == min(len(parts), len(sizes))
