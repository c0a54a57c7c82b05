"""Apply lifecycle files (CDAR, statuses 200–214) to the invoices deposited on the PA.

Each valid status of a known invoice: one exchange-log row (kind `cycle_de_vie`, once per
invoice, code and date: replaying a file changes nothing), and the flow's current status when it
is newer than the one held (an older status arriving late never overwrites a newer one); 212
Encaissée records the payment date (the newest 212's). A file is applied in the caller's
transaction with a few statements, whatever its number of statuses. An invalid or hostile file,
or a status of an invoice we did not deposit, is set aside with its French reason (exchange row
`quarantaine`) while the others still apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from postier.domain.lifecycle import (
    CASHED,
    NEEDS_ATTENTION,
    PARIS,
    LifecycleStatus,
    parse_lifecycle,
)
from postier.errors import ReturnFileError
from postier.pipeline.context import Environment
from postier.store.exchanges import Exchange, record_exchange, record_exchanges

KIND = "cycle_de_vie"
PARTNER = "PLATEFORME"


@dataclass
class LifecycleSummary:
    applied: list[str] = field(default_factory=list)
    #: Statuses the clerk must act on (207 En litige, 210 Refusée, 213 Rejetée), with reasons.
    attention: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)
    #: Every status applied, for the run report.
    lines: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: LifecycleSummary) -> None:
        self.applied += other.applied
        self.attention += other.attention
        self.lines += other.lines
        for source, reason in other.quarantined.items():
            self.quarantined.setdefault(source, reason)


def import_files(env: Environment, paths: list[Path], *, by: str) -> LifecycleSummary:
    """`postier plateforme importer FICHIER…`: apply lifecycle files read from disk."""
    summary = LifecycleSummary()
    with env.connect() as conn:
        for path in paths:
            try:
                statuses = parse_lifecycle(path.read_bytes())
            except (ReturnFileError, OSError) as error:
                with conn.transaction():
                    quarantine(conn, path.name, str(error), by, summary)
                continue
            with conn.transaction():
                apply_statuses(conn, statuses, path.name, by, summary)
    return summary


@dataclass
class _Flow:
    invoice_id: int
    code: str | None
    at: datetime | None
    reason: str | None
    paid_at: datetime | None
    changed: bool = False


def apply_statuses(
    conn: psycopg.Connection,
    statuses: list[LifecycleStatus],
    source: str,
    by: str,
    summary: LifecycleSummary,
    *,
    run_id: int | None = None,
) -> list[str]:
    """Apply the statuses of one file, in the caller's transaction, in a few statements whatever
    their number; the reasons of the statuses set aside (invoice unknown or never deposited)."""
    numbers = sorted({s.invoice_number for s in statuses})
    flows = {
        number: _Flow(*rest)
        for number, *rest in conn.execute(
            "SELECT i.number, f.invoice_id, f.lifecycle_status, f.lifecycle_at, "
            "f.lifecycle_reason, f.paid_at FROM plateforme_flows f "
            "JOIN invoices i ON i.id = f.invoice_id "
            "WHERE i.number = ANY(%s::text[]) AND f.status = 'deposee' "
            "ORDER BY f.invoice_id FOR UPDATE OF f",
            (numbers,),
        )
    }
    # A status already logged (same invoice, code and date) is a replay: nothing again.
    seen = {
        (invoice_id, code, at)
        for invoice_id, code, at in conn.execute(
            "SELECT invoice_id, status, (report->>'date')::timestamptz FROM exchanges "
            "WHERE invoice_id = ANY(%s::bigint[]) AND kind = %s",
            ([f.invoice_id for f in flows.values()], KIND),
        )
    }
    exchanges: list[Exchange] = []
    set_aside: list[str] = []
    for s in statuses:
        flow = flows.get(s.invoice_number)
        if flow is None:
            reason = (
                f"statut {s} pour la facture {s.invoice_number}, inconnue ou jamais déposée sur "
                "la plateforme agréée"
            )
            exchanges.append(_quarantine_row(source, reason, by, run_id))
            summary.quarantined.setdefault(source, reason)
            set_aside.append(reason)
            continue
        if (flow.invoice_id, s.code, s.at) in seen:
            continue
        seen.add((flow.invoice_id, s.code, s.at))
        current = flow.at is None or flow.at <= s.at
        if current:
            flow.code, flow.at, flow.reason, flow.changed = s.code, s.at, s.reason or None, True
        if s.code == CASHED and (flow.paid_at is None or flow.paid_at < s.at):
            # The payment date is the newest 212 received: a late, older one never rewrites it,
            # and a 212 older than the current status still records the payment.
            flow.paid_at, flow.changed = s.at, True
        report = {
            "code": s.code,
            "libelle": s.label,
            "date": s.at.isoformat(),
            "motif": s.reason,
            "fichier": source,
        }
        exchanges.append(Exchange(flow.invoice_id, run_id, KIND, PARTNER, s.code, report, by))
        line = f"{s.invoice_number} : {s}"
        summary.applied.append(line)
        summary.lines.append(
            {
                "facture": s.invoice_number,
                "code": s.code,
                "libelle": s.label,
                "date_statut": s.at.astimezone(PARIS).isoformat(timespec="seconds"),
                "motif": s.reason,
                "fichier": source,
                "courant": current,
            }
        )
        if s.code in NEEDS_ATTENTION:
            summary.attention.append(line)
    record_exchanges(conn, exchanges)
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE plateforme_flows SET lifecycle_status = %s, lifecycle_at = %s, "
            "lifecycle_reason = %s, paid_at = %s WHERE invoice_id = %s",
            [
                (f.code, f.at, f.reason, f.paid_at, f.invoice_id)
                for f in flows.values()
                if f.changed
            ],
        )
    return set_aside


def quarantine(
    conn: psycopg.Connection,
    source: str,
    reason: str,
    by: str,
    summary: LifecycleSummary,
    *,
    run_id: int | None = None,
) -> None:
    """A whole file set aside: one exchange row without invoice, with the French reason."""
    record_exchange(conn, _quarantine_row(source, reason, by, run_id))
    summary.quarantined.setdefault(source, reason)


def _quarantine_row(source: str, reason: str, by: str, run_id: int | None) -> Exchange:
    report = {"fichier": source, "motif": reason}
    return Exchange(None, run_id, KIND, PARTNER, "quarantaine", report, by)
