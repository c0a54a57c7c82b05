"""Selection criteria compiled to one parameterised SQL query (values are always bound)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from postier.domain.selection import Selection
from postier.domain.states import SEND_STATE_LABELS, SendState
from postier.domain.treatments import TreatmentId

if TYPE_CHECKING:
    import pandas as pd


def where_clause(selection: Selection) -> tuple[sql.Composed, dict[str, Any]]:
    """The WHERE clause over `invoices i JOIN customers c` and its bound parameters."""
    t = selection.treatment
    clauses: list[str] = ["i.send_state = ANY(%(states)s)"]
    params: dict[str, Any] = {"states": sorted(s.value for s in selection.states)}

    def add(clause: str, **values: Any) -> None:
        clauses.append(clause)
        params.update(values)

    if selection.batch_from is not None:
        add("i.batch_number >= %(batch_from)s", batch_from=selection.batch_from)
    if selection.batch_to is not None:
        add("i.batch_number <= %(batch_to)s", batch_to=selection.batch_to)
    if selection.invoice_date_from is not None:
        add("i.invoice_date >= %(inv_from)s", inv_from=selection.invoice_date_from)
    if selection.invoice_date_to is not None:
        add("i.invoice_date <= %(inv_to)s", inv_to=selection.invoice_date_to)
    edited_start, edited_end = selection.edited_bounds()
    if edited_start is not None:
        add("i.edited_at >= %(ed_start)s", ed_start=edited_start)
    if edited_end is not None:
        add("i.edited_at < %(ed_end)s", ed_end=edited_end)
    if selection.created_by is not None:
        add("i.created_by = %(created_by)s", created_by=selection.created_by)
    if selection.edited_by is not None:
        add("i.edited_by = %(edited_by)s", edited_by=selection.edited_by)
    if selection.only_unedited:
        add("i.edited_at IS NULL")
    if selection.only_not_dematerialized:
        add("NOT i.dematerialized")
    if selection.created_since is not None:
        add("i.created_at >= %(created_since)s", created_since=selection.created_since_instant())
    if t.payment_modes is not None:
        add("i.payment_mode = ANY(%(modes)s)", modes=sorted(m.value for m in t.payment_modes))
    if t.channel is not None:
        add("c.channel = %(channel)s", channel=t.channel.value)
    if selection.invoice_ids is not None:
        add("i.id = ANY(%(invoice_ids)s)", invoice_ids=sorted(selection.invoice_ids))
    if t.id is TreatmentId.CHORUS_RECUPERER:
        # Rejected for another reason than routing data (05): a credit note and a new invoice,
        # never the same invoice again.
        add("i.chorus_deposited_at IS NULL AND i.chorus_status IS DISTINCT FROM '05'")
    return sql.SQL(" AND ").join(sql.SQL(c) for c in clauses), params


def _query(selection: Selection, columns: str, limit: int | None) -> tuple[sql.Composed, dict]:
    where, params = where_clause(selection)
    query = sql.SQL(
        "SELECT {columns} FROM invoices i JOIN customers c ON c.id = i.customer_id "
        "WHERE {where} ORDER BY i.number"
    ).format(columns=sql.SQL(columns), where=where)
    if limit is not None:
        query += sql.SQL(" LIMIT {}").format(sql.Literal(int(limit)))
    return query, params


def select_ids(conn: psycopg.Connection, selection: Selection) -> list[int]:
    """Ids of the matching invoices, in invoice-number order (the print order)."""
    query, params = _query(selection, "i.id", None)
    return [row[0] for row in conn.execute(query, params)]


def explain(conn: psycopg.Connection, selection: Selection) -> str:
    query, params = _query(selection, "i.id", None)
    rows = conn.execute(sql.SQL("EXPLAIN ") + query, params).fetchall()
    return "\n".join(r[0] for r in rows)


FRAME_COLUMNS = {
    "numero": "i.number",
    "date": "i.invoice_date",
    "client": "c.code",
    "nom": "c.name",
    "lot": "i.batch_number",
    "etat": "i.send_state",
    "canal": "c.channel",
    "reglement": "i.payment_mode",
    "total_ttc": "i.total_gross",
    "cree_par": "i.created_by",
    "edite_le": "i.edited_at",
    "edite_par": "i.edited_by",
}


def select_frame(
    conn: psycopg.Connection, selection: Selection, limit: int | None = None
) -> pd.DataFrame:
    """The matching invoices as a table (for the command line and run reports)."""
    columns = ", ".join(f"{expr} AS {name}" for name, expr in FRAME_COLUMNS.items())
    query, params = _query(selection, columns, limit)
    rows = conn.execute(query, params).fetchall()
    # pandas (a second of start-up) is for the command line only: tasks never load it.
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    frame["etat"] = frame["etat"].map(lambda s: SEND_STATE_LABELS[SendState(s)])
    return frame
