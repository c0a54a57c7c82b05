"""Small builders that insert customers and invoices with sensible defaults, for precise tests."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from postier.domain.selection import PARIS

_counter = itertools.count(1)


def insert_customer(conn: psycopg.Connection, **values: Any) -> int:
    n = next(_counter)
    row: dict[str, Any] = {
        "code": f"C{n:05d}",
        "name": f"Client {n}",
        "address_line1": "1 rue de la Paix",
        "postal_code": "75002",
        "city": "Paris",
        "emails": [f"client{n}@example.fr"],
        "channel": "portail",
        "siren": "732829320",
        "siret": "73282932000074",
    } | values
    if row["channel"] == "plateforme" and "einvoicing_address" not in values:
        # Typed on the customer's data, so that the directory is needed only where a test
        # says so (einvoicing_address=None).
        row["einvoicing_address"] = row["siren"] or (row["siret"] or "")[:9] or None
    cols = list(row)
    query = sql.SQL("INSERT INTO customers ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
    )
    return int(conn.execute(query, [row[c] for c in cols]).fetchone()[0])  # type: ignore[index]


def _invoice_row(customer_id: int, lines: int, values: dict[str, Any]) -> dict[str, Any]:
    """The invoice's header columns: `lines` lines of 100 € HT at 20 % VAT, `values` over them."""
    net = Decimal("100.00") * lines
    vat = net * Decimal("0.20")
    return {
        "number": f"FA-{next(_counter):08d}",
        "customer_id": customer_id,
        "invoice_date": date(2026, 11, 2),
        "due_date": date(2026, 12, 2),
        "batch_number": 100,
        "created_by": "mdupont",
        "created_at": datetime(2026, 11, 2, 9, 0, tzinfo=PARIS),
        "payment_mode": "virement",
        "total_net": net,
        "total_vat": vat,
        "total_gross": net + vat,
    } | values


LINE = (
    "INSERT INTO invoice_lines (invoice_id, position, description, quantity, unit, unit_price, "
    "vat_rate, net_amount) "
)


def _set_send_state(conn: psycopg.Connection, invoice_ids: list[int], state: str) -> None:
    if state != "EN_ATTENTE":
        stamps = ", sent_at = now(), sent_by = 'mdupont'" if state == "ENVOYE" else ""
        conn.execute(
            sql.SQL("UPDATE invoices SET send_state = %s{} WHERE id = ANY(%s)").format(
                sql.SQL(stamps)
            ),
            (state, invoice_ids),
        )


def insert_invoice(
    conn: psycopg.Connection, customer_id: int | None = None, lines: int = 1, **values: Any
) -> int:
    """An invoice of `lines` lines of 100 € HT at 20 % VAT; `values` override header columns."""
    if customer_id is None:
        customer_id = insert_customer(conn)
    state = values.pop("send_state", "EN_ATTENTE")
    row = _invoice_row(customer_id, lines, values)
    cols = list(row)
    query = sql.SQL("INSERT INTO invoices ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
    )
    invoice_id = int(conn.execute(query, [row[c] for c in cols]).fetchone()[0])  # type: ignore[index]
    for pos in range(1, lines + 1):
        conn.execute(
            LINE + "VALUES (%s, %s, %s, 1, 'U', 100, 20, 100)",
            (invoice_id, pos, f"Prestation {pos}"),
        )
    _set_send_state(conn, [invoice_id], state)
    return invoice_id


def insert_invoices(
    conn: psycopg.Connection,
    invoices: list[tuple[int, int, dict[str, Any]]],
    send_state: str = "EN_ATTENTE",
) -> list[int]:
    """Many invoices as `insert_invoice` makes them, in a few statements whatever their number:
    (customer id, lines, header values) each, all in `send_state`; their ids, in order."""
    if not invoices:
        return []
    rows = [_invoice_row(customer, lines, values) for customer, lines, values in invoices]
    cols = list(rows[0])
    assert all(list(row) == cols for row in rows), "every invoice needs the same columns"
    # COPY cannot return the ids: the rows are numbered, then read back by number.
    query = sql.SQL("COPY invoices ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, cols))
    )
    with conn.cursor().copy(query) as copy:
        for row in rows:
            copy.write_row([row[c] for c in cols])
    numbers = [row["number"] for row in rows]
    ids = dict(conn.execute("SELECT number, id FROM invoices WHERE number = ANY(%s)", (numbers,)))
    invoice_ids = [int(ids[number]) for number in numbers]
    conn.execute(
        LINE + "SELECT i, pos, 'Prestation ' || pos, 1, 'U', 100, 20, 100 "
        "FROM unnest(%s::bigint[], %s::int[]) AS t(i, n), generate_series(1, n) AS pos",
        (invoice_ids, [lines for _, lines, _ in invoices]),
    )
    _set_send_state(conn, invoice_ids, send_state)
    return invoice_ids


def insert_paper_invoices(
    dsn: str, prefix: str, batch: int, count: int, send_state: str = "PRET"
) -> list[str]:
    """`count` invoices of batch `batch` for a new paper customer, committed on a connection of
    their own (for a real Airflow's tasks to find); their numbers, `prefix-batch-n`."""
    with psycopg.connect(dsn) as conn:
        customer = insert_customer(conn, channel="papier")
        numbers = [f"{prefix}-{batch}-{n}" for n in range(count)]
        header = {"batch_number": batch}
        insert_invoices(conn, [(customer, 1, header | {"number": n}) for n in numbers], send_state)
    return numbers


def days_ago(n: int) -> datetime:
    return datetime.now(PARIS) - timedelta(days=n)


def insert_deposited_invoice(conn: psycopg.Connection, number: str, flow_id: str = "") -> int:
    """An invoice of a `plateforme` customer whose flow the PA accepted (`flow_id`)."""
    customer = insert_customer(conn, channel="plateforme", siren="732829320")
    invoice_id = insert_invoice(conn, customer, number=number, send_state="ENVOYE")
    conn.execute(
        "INSERT INTO plateforme_flows (invoice_id, tracking_id, file_name, sha256, status, "
        "flow_id, deposited_at, created_by) VALUES (%s, %s, %s, %s, 'deposee', %s, now(), 'x')",
        (
            invoice_id,
            f"postier-facture-{invoice_id}",
            f"{number}.pdf",
            "0" * 64,
            flow_id or f"F-{number}",
        ),
    )
    conn.commit()
    return invoice_id


def lifecycle_of(conn: psycopg.Connection, number: str) -> tuple[list[str], tuple[Any, ...]]:
    """The lifecycle statuses logged for an invoice, in order, and its flow's current status,
    reason and payment date."""
    logged = conn.execute(
        "SELECT e.status FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE i.number = %s AND e.kind = 'cycle_de_vie' ORDER BY e.id",
        (number,),
    ).fetchall()
    current = conn.execute(
        "SELECT f.lifecycle_status, f.lifecycle_reason, f.paid_at FROM plateforme_flows f "
        "JOIN invoices i ON i.id = f.invoice_id WHERE i.number = %s",
        (number,),
    ).fetchone()
    conn.commit()
    assert current is not None
    return [r[0] for r in logged], tuple(current)


def read_rows(dsn: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query, read on a connection of its own: what the tasks committed."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()
