"""The exchange log (`exchanges`): one row per thing that happened to an invoice with a partner
(a state change, a GED deposit, an e-mail, a Chorus or PA flow, a lifecycle status, a file set
aside). Every module writes it through here, so the column list lives in one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb


class Exchange(NamedTuple):
    """One row of the log; `invoice_id` is None for a whole file set aside."""

    invoice_id: int | None
    run_id: int | None
    kind: str
    partner: str
    status: str
    report: dict[str, Any]
    by: str


def record_exchange(conn: psycopg.Connection, exchange: Exchange) -> None:
    """Write one exchange row."""
    record_exchanges(conn, [exchange])


def record_exchanges(conn: psycopg.Connection, exchanges: Iterable[Exchange]) -> None:
    """Write many exchange rows, in their order, in one statement whatever their number (a chunk
    or a return file may carry thousands)."""
    rows = list(exchanges)
    if not rows:
        return
    conn.execute(
        "INSERT INTO exchanges (invoice_id, run_id, kind, partner, status, report, by) "
        "SELECT i, r, k, p, s, j, b FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
        "%s::text[], %s::text[], %s::jsonb[], %s::text[]) "
        "WITH ORDINALITY AS e(i, r, k, p, s, j, b, n) ORDER BY n",
        (
            [e.invoice_id for e in rows],
            [e.run_id for e in rows],
            [e.kind for e in rows],
            [e.partner for e in rows],
            [e.status for e in rows],
            [Jsonb(e.report) for e in rows],
            [e.by for e in rows],
        ),
    )


def record_same_exchange(
    conn: psycopg.Connection, invoice_ids: Sequence[int], exchange: Exchange
) -> None:
    """One row per invoice of `invoice_ids`, in their order, all alike but for the invoice:
    `exchange`'s report sent once, not once per row."""
    if not invoice_ids:
        return
    conn.execute(
        "INSERT INTO exchanges (invoice_id, run_id, kind, partner, status, report, by) "
        "SELECT e.i, %s::bigint, %s::text, %s::text, %s::text, %s::jsonb, %s::text "
        "FROM unnest(%s::bigint[]) "
        "WITH ORDINALITY AS e(i, n) ORDER BY n",
        (
            exchange.run_id,
            exchange.kind,
            exchange.partner,
            exchange.status,
            Jsonb(exchange.report),
            exchange.by,
            list(invoice_ids),
        ),
    )
