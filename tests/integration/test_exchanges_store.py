"""The exchange-log store helper: every module's rows go through it."""

from __future__ import annotations

import psycopg

from postier.store.exchanges import Exchange, record_exchange, record_exchanges


def test_exchange_rows_are_logged_in_their_order_with_their_report(
    conn: psycopg.Connection,
) -> None:
    rows = [
        Exchange(None, None, "cycle_de_vie", "PLATEFORME", "quarantaine", {"motif": "é"}, "u1"),
        Exchange(None, None, "retour_chorus", "CHORUS", "rejetee", {"n": [1, 2]}, "u2"),
        Exchange(None, None, "export_chorus", "CHORUS", "deposee", {}, "u3"),
    ]
    record_exchanges(conn, rows)
    record_exchanges(conn, [])
    record_exchange(conn, Exchange(None, None, "ged", "GED", "archivee", {"v": 1}, "u4"))
    logged = conn.execute(
        "SELECT invoice_id, run_id, kind, partner, status, report, by FROM exchanges ORDER BY id"
    ).fetchall()
    assert [Exchange(*r) for r in logged] == [
        *rows,
        Exchange(None, None, "ged", "GED", "archivee", {"v": 1}, "u4"),
    ]
