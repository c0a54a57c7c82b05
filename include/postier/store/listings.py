"""The clerk's lists: invoices matching a selection, and runs; keyset-paged, one query per page.

Keyset paging (`WHERE key > last ORDER BY key LIMIT n + 1`) costs the same on the first page
and on the thousandth, whatever the number of matching rows: no OFFSET, no COUNT(*).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from postier.domain.selection import PARIS, Selection
from postier.store.selection import where_clause

#: Rows per page of the lists.
PAGE_SIZE = 100


@dataclass(frozen=True)
class InvoiceRow:
    id: int
    number: str
    invoice_date: date
    customer_code: str
    customer_name: str
    total_gross: Decimal
    send_state: str
    channel: str
    edited_at: datetime | None
    edited_by: str | None
    sent_at: datetime | None
    sent_by: str | None


#: Why a run failed: the refusal at its start (`motif`), or its every invoice refused or its print
#: file not made (`echec`).
_REASON = "coalesce(r.report->>'motif', r.report->>'echec')"


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    #: Keys for the links « page suivante » / « page précédente »; None when there is none.
    next_key: Any | None
    previous_key: Any | None


def _page(rows: list[Any], size: int, key: Any, backwards: bool, first: bool) -> Page:
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
        return Page(rows, key(rows[-1]) if rows else None, key(rows[0]) if more else None)
    return Page(rows, key(rows[-1]) if more else None, None if first else key(rows[0]))


INVOICE_COLUMNS = (
    "i.id, i.number, i.invoice_date, c.code, c.name, i.total_gross, i.send_state, c.channel, "
    "i.edited_at, i.edited_by, i.sent_at, i.sent_by"
)


def invoice_page(
    conn: psycopg.Connection,
    selection: Selection,
    after: str | None = None,
    before: str | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """The invoices the treatment would take, in print order (invoice number), one page."""
    where, params = where_clause(selection)
    backwards = before is not None and after is None
    if backwards:
        where = sql.SQL("{} AND i.number < %(key)s").format(where)
        params["key"] = before
    elif after is not None:
        where = sql.SQL("{} AND i.number > %(key)s").format(where)
        params["key"] = after
    query = sql.SQL(
        "SELECT {cols} FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE {where} "
        "ORDER BY i.number {direction} LIMIT {limit}"
    ).format(
        cols=sql.SQL(INVOICE_COLUMNS),
        where=where,
        direction=sql.SQL("DESC" if backwards else "ASC"),
        limit=sql.Literal(size + 1),
    )
    rows = [InvoiceRow(*r) for r in conn.execute(query, params).fetchall()]
    return _page(rows, size, lambda r: r.number, backwards, first=after is None and not backwards)


@dataclass(frozen=True)
class RunRow:
    id: int
    treatment: str
    status: str
    triggered_by: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    external_id: str | None
    #: Invoices done / selected, read while the run is still going (None once it has ended).
    progress: tuple[int, int] | None
    #: Why the run failed or was refused as a whole (French, from its report), if it was.
    reason: str | None = None


@dataclass(frozen=True)
class RunFilter:
    treatment: str | None = None
    status: str | None = None
    triggered_by: str | None = None
    date_from: date | None = None
    date_to: date | None = None


def run_page(
    conn: psycopg.Connection,
    flt: RunFilter,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> Page:
    """Runs, newest first, filtered; the progress of the ones still running."""
    clauses = ["true"]
    params: dict[str, Any] = {}
    if flt.treatment:
        clauses.append("r.treatment = %(treatment)s")
        params["treatment"] = flt.treatment
    if flt.status:
        clauses.append("r.status = %(status)s")
        params["status"] = flt.status
    if flt.triggered_by:
        clauses.append("r.triggered_by = %(who)s")
        params["who"] = flt.triggered_by
    if flt.date_from:
        clauses.append("r.started_at >= %(from)s")
        params["from"] = datetime.combine(flt.date_from, time(), PARIS)
    if flt.date_to:
        clauses.append("r.started_at < %(to)s")
        params["to"] = datetime.combine(flt.date_to + timedelta(days=1), time(), PARIS)
    backwards = after is not None and before is None
    if backwards:
        clauses.append("r.id > %(key)s")
        params["key"] = after
    elif before is not None:
        clauses.append("r.id < %(key)s")
        params["key"] = before
    query = sql.SQL(
        "SELECT r.id, r.treatment, r.status, r.triggered_by, r.started_at, r.finished_at, "
        f"r.counts, r.external_id, p.done, p.total, {_REASON} FROM runs r "
        "LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE s.status <> 'a_traiter') AS done, "
        "count(*) AS total FROM run_items s WHERE s.run_id = r.id) p ON r.status = 'en_cours' "
        "WHERE {where} ORDER BY r.id {direction} LIMIT {limit}"
    ).format(
        where=sql.SQL(" AND ".join(clauses)),
        direction=sql.SQL("ASC" if backwards else "DESC"),
        limit=sql.Literal(size + 1),
    )
    rows = [
        _run(r, (int(r[8]), int(r[9])) if r[9] is not None else None, r[10])
        for r in conn.execute(query, params).fetchall()
    ]
    return _page(rows, size, lambda r: r.id, backwards, first=before is None and not backwards)


def run_row(conn: psycopg.Connection, run_id: int) -> tuple[RunRow, str | None] | None:
    """One run and its output folder (None if it has none)."""
    row = conn.execute(
        "SELECT r.id, r.treatment, r.status, r.triggered_by, r.started_at, r.finished_at, "
        "r.counts, r.external_id, r.output_dir, "
        "(SELECT count(*) FILTER (WHERE status <> 'a_traiter') FROM run_items WHERE run_id = r.id),"
        f" (SELECT count(*) FROM run_items WHERE run_id = r.id), {_REASON} "
        "FROM runs r WHERE r.id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    progress = (int(row[9]), int(row[10])) if row[2] == "en_cours" else None
    return _run(row, progress, row[11]), row[8]


def _run(r: Any, progress: tuple[int, int] | None, reason: str | None) -> RunRow:
    return RunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], progress, reason)


def run_output_dir(conn: psycopg.Connection, run_id: int) -> str | None:
    row = conn.execute("SELECT output_dir FROM runs WHERE id = %s", (run_id,)).fetchone()
    return row[0] if row else None
