"""A chunk's outcomes rewrite its run items on their own pages, and read back right after a retry.

Migration 024: the run items' index leaves `status` out and their pages keep room, so recording
a chunk's outcomes (one UPDATE) writes no index entry (HOT updates), while the chunk reads that
drive the tasks still find a chunk's items by index.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from builders import insert_customer, insert_invoices

from postier.pipeline.context import Environment
from postier.pipeline.runs import start_run
from postier.store.runs import (
    DONE,
    FAILED,
    PENDING,
    ItemOutcome,
    chunk_sizes,
    pending_chunks,
    pending_ids,
    record_outcomes,
    still_pending,
)


def planned_run(
    dsn: str, home: Path, invoices: int, earlier: int = 0
) -> tuple[int, dict[int, list[int]]]:
    """A prepare run over `invoices` new invoices, after `earlier` runs over the same ones that
    ended (their items done): its id, each chunk's items in print order."""
    with psycopg.connect(dsn) as conn:
        customer = insert_customer(conn)
        insert_invoices(conn, [(customer, 1, {"number": f"RI-{n:05d}"}) for n in range(invoices)])
    env = Environment(dsn=dsn, home=home, workers=2)
    for number in range(earlier + 1):
        run_id = start_run(env, "factures_preparer_envoi", {}, "jmartin", f"test/ri/{number}")[
            "run_id"
        ]
        if number < earlier:
            with psycopg.connect(dsn) as conn:
                conn.execute(
                    "UPDATE run_items SET status = %s, done_at = now() WHERE run_id = %s",
                    (DONE, run_id),
                )
    chunks: dict[int, list[int]] = {}
    with psycopg.connect(dsn) as conn:
        for chunk, invoice_id in conn.execute(
            "SELECT chunk, invoice_id FROM run_items WHERE run_id = %s ORDER BY position",
            (run_id,),
        ):
            chunks.setdefault(chunk, []).append(invoice_id)
    return run_id, chunks


def test_a_retried_chunks_outcomes_are_written_in_place_and_read_back(
    postier_env: str, tmp_path: Path
) -> None:
    run_id, chunks = planned_run(postier_env, tmp_path / "home", 500)
    assert len(chunks) >= 2 and len(chunks[0]) >= 150
    first = chunks[0]
    # As a prepare records them: the prepared file's location under the run's folder.
    folder = tmp_path / "home" / "runs" / f"factures_preparer_envoi-{run_id}" / "preparees"
    outcomes = [
        ItemOutcome(i, DONE, output=f"{folder}/RI-{n:05d}.pdf") for n, i in enumerate(first)
    ]
    outcomes[3] = ItemOutcome(first[3], FAILED, "montant nul : à conserver en interne")
    # The first attempt dies before its commit, its connection with it: nothing of it stays.
    killed = psycopg.connect(postier_env)
    record_outcomes(killed, run_id, outcomes)
    killed.close()
    # The retry, on the next task's connection.
    with psycopg.connect(postier_env, autocommit=True) as conn:
        assert pending_ids(conn, run_id, 0) == first
        with conn.transaction():
            record_outcomes(conn, run_id, outcomes)
            counted = conn.execute(
                "SELECT pg_stat_get_xact_tuples_updated('run_items'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('run_items'::regclass)"
            ).fetchone()
        items = conn.execute(
            "SELECT invoice_id, status, reason, output FROM run_items "
            "WHERE run_id = %s AND chunk = 0 ORDER BY position",
            (run_id,),
        ).fetchall()
        left = {c: pending_ids(conn, run_id, c) for c in chunks}
        open_chunks = still_pending(conn, run_id, sorted(chunks))
        listed = pending_chunks(conn, run_id)
        sizes = chunk_sizes(conn, run_id)
    assert items == [(o.invoice_id, o.status, o.reason, o.output) for o in outcomes]
    assert left == {c: [] if c == 0 else ids for c, ids in chunks.items()}
    assert open_chunks == set(listed) == set(chunks) - {0}
    assert sizes == {c: (len(ids), c != 0) for c, ids in chunks.items()}
    # Every item's new version went beside the old one on its page: no index entry written.
    assert counted == (len(first), len(first))


def test_the_chunk_reads_find_a_chunks_items_by_index_among_earlier_runs(
    postier_env: str, tmp_path: Path, owner_dsn: str
) -> None:
    run_id, chunks = planned_run(postier_env, tmp_path / "home", 2000, earlier=4)
    chunk = max(chunks)
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("ANALYZE run_items")
        conn.commit()
        # The reads as the code writes them (store/runs.py): a chunk's pending items, its claim,
        # the progress line's look at the chunks still open.
        plans = [
            "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + query.encode(), params).fetchall())
            for query, params in (
                (
                    "SELECT invoice_id FROM run_items WHERE run_id = %s AND chunk = %s "
                    "AND status = %s ORDER BY position",
                    (run_id, chunk, PENDING),
                ),
                (
                    "SELECT EXISTS (SELECT 1 FROM run_items WHERE run_id = %s AND chunk = %s "
                    "AND status = %s)",
                    (run_id, chunk, PENDING),
                ),
                (
                    "SELECT c FROM unnest(%s::int[]) AS c WHERE (SELECT 1 FROM run_items "
                    "WHERE run_id = %s AND chunk = c AND status = %s LIMIT 1) IS NOT NULL",
                    (sorted(chunks), run_id, PENDING),
                ),
            )
        ]
    for plan in plans:
        assert "run_items_run_chunk" in plan and "Seq Scan on run_items" not in plan, plan
