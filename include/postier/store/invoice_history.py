"""One invoice's history for the clerk: states, stamps, runs, exchange log, archived documents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg


@dataclass(frozen=True)
class ArchivedDocument:
    id: int
    kind: str
    sha256: str
    size: int
    location: str
    signed: bool
    at: datetime


@dataclass(frozen=True)
class InvoiceHistory:
    id: int
    number: str
    invoice_date: date
    customer: str
    channel: str
    total_gross: Decimal
    #: The invoice's state and stamps by column (see `_STAMPS`), in the order the clerk reads them.
    stamps: dict[str, Any]
    #: (run id, treatment, status, reason, when, file) of every run that selected the invoice;
    #: file: the document the run made for it, relative to the run's folder (or None).
    runs: list[tuple[int, str, str, str | None, datetime | None, str | None]]
    #: (when, kind, partner, status, by, report) of the exchange log, oldest first.
    exchanges: list[tuple[datetime, str, str, str, str, dict[str, Any]]]
    documents: list[ArchivedDocument]


#: The invoice columns shown as its state and stamps, in the order the clerk reads them.
_STAMPS = (
    "send_state",
    "created_at",
    "created_by",
    "state_changed_at",
    "state_changed_by",
    "edited_at",
    "edited_by",
    "sent_at",
    "sent_by",
    "dematerialized",
    "dematerialized_channel",
    "chorus_flow_name",
    "chorus_deposited_at",
    "chorus_status",
    "chorus_status_at",
)


def invoice_history(conn: psycopg.Connection, number: str) -> InvoiceHistory | None:
    row = conn.execute(
        "SELECT i.id, i.number, i.invoice_date, c.code || ' — ' || c.name, c.channel, "
        f"i.total_gross, {', '.join('i.' + c for c in _STAMPS)} "
        "FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE i.number = %s",
        (number,),
    ).fetchone()
    if row is None:
        return None
    invoice_id = row[0]
    stamps = dict(zip(_STAMPS, row[6:], strict=True))
    runs = [
        (run_id, treatment, status, reason, done_at, _relative(output, folder))
        for run_id, treatment, status, reason, done_at, output, folder in conn.execute(
            "SELECT r.id, r.treatment, s.status, s.reason, s.done_at, s.output, r.output_dir "
            "FROM run_items s JOIN runs r ON r.id = s.run_id WHERE s.invoice_id = %s "
            "ORDER BY r.id",
            (invoice_id,),
        )
    ]
    exchanges = conn.execute(
        "SELECT at, kind, partner, status, by, report FROM exchanges WHERE invoice_id = %s "
        "ORDER BY at, id",
        (invoice_id,),
    ).fetchall()
    documents = conn.execute(
        "SELECT id, kind, sha256, size, location, signed, at FROM documents "
        "WHERE invoice_id = %s ORDER BY id",
        (invoice_id,),
    ).fetchall()
    return InvoiceHistory(
        *row[:6],
        stamps=stamps,
        runs=runs,  # type: ignore[misc]
        exchanges=[tuple(e) for e in exchanges],
        documents=[ArchivedDocument(*d) for d in documents],
    )


def _relative(output: str | None, folder: str | None) -> str | None:
    if not output or not folder or not output.startswith(folder.rstrip("/") + "/"):
        return None
    return output[len(folder.rstrip("/")) + 1 :]


def archived_document(
    conn: psycopg.Connection, number: str, document_id: int
) -> ArchivedDocument | None:
    """A document of this invoice only (the id alone never reaches another invoice's file)."""
    row = conn.execute(
        "SELECT d.id, d.kind, d.sha256, d.size, d.location, d.signed, d.at FROM documents d "
        "JOIN invoices i ON i.id = d.invoice_id WHERE i.number = %s AND d.id = %s",
        (number, document_id),
    ).fetchone()
    return ArchivedDocument(*row) if row else None
