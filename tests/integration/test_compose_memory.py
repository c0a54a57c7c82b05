"""The send's e-mail composition holds one customer's notices at a time, whatever the run's size.

It ran in the chunk task that ends a send, after that task's chunks: rows it loaded whole
(every notice of the run) stacked on the chunks' working set, and the task's peak memory
grew with the number of invoices.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import psycopg
from builders import insert_customer, insert_invoices

from postier.pipeline.context import Environment
from postier.pipeline.mailing import PENDING, compose_messages
from postier.store import runs as run_store
from postier.store.settings import load_settings

#: Invoices per customer: the messages (one per customer) stay the same size at every volume.
PER_CUSTOMER = 4


def _composition_peak(dsn: str, home: Path, invoices: int) -> tuple[int, int]:
    """(messages composed, tracemalloc peak in bytes) for a run of `invoices` portal notices."""
    with psycopg.connect(dsn) as conn:
        customers = [insert_customer(conn) for _ in range(invoices // PER_CUSTOMER)]
        ids = insert_invoices(
            conn, [(c, 1, {}) for c in customers for _ in range(PER_CUSTOMER)], "ENVOYE"
        )
        run_id = run_store.create_run(conn, "factures_envoyer", f"mem/{invoices}", {}, "mdupont")
        conn.execute(
            "INSERT INTO exchanges (invoice_id, run_id, kind, partner, status, by) "
            "SELECT i, %s, 'mise_a_disposition', 'CLIENT', %s, 'mdupont' "
            "FROM unnest(%s::bigint[]) i",
            (run_id, PENDING, ids),
        )
        conn.commit()
    env = Environment(dsn=dsn, home=home, workers=1)
    with psycopg.connect(dsn) as conn:
        settings = load_settings(conn)
        tracemalloc.start()
        try:
            composed = compose_messages(conn, env, settings, run_id)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return composed, peak


def test_composition_peak_does_not_grow_with_the_run(db_dsn: str, tmp_path: Path) -> None:
    small_n, large_n = 500, 2_000
    # Templates compiled and modules imported once, before either measure.
    _composition_peak(db_dsn, tmp_path / "warm", 2 * PER_CUSTOMER)
    small, small_peak = _composition_peak(db_dsn, tmp_path / "a", small_n)
    large, large_peak = _composition_peak(db_dsn, tmp_path / "b", large_n)
    assert (small, large) == (small_n // PER_CUSTOMER, large_n // PER_CUSTOMER)
    # Rows loaded whole and templates compiled anew for each message: 0.4 then 1.6 MB for the
    # rows alone, 1.9 then 6.7 MB with the templates (1,000 and 4,000 notices); one customer at a
    # time with the templates compiled once, ≈ 0.1 MB at both.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
