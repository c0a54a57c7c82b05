"""How a run's selection is cut into chunks: in selection order, as many as the workers (or a
multiple), sharing the expected work evenly: no slot idles while another ends a long chunk."""

from __future__ import annotations

from pathlib import Path

import psycopg
from builders import insert_customer, insert_invoices

from postier.pipeline.context import Environment
from postier.pipeline.runs import start_run
from postier.store.runs import LINE_COST


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
