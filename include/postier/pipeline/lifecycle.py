"""Apply lifecycle files (CDAR, statuses 200–214) to the invoices deposited on the PA.

Each valid status of a known invoice: one exchange-log row (kind `cycle_de_vie`, once per
invoice, code and date: replaying a file changes nothing), and the flow's current status when it
is newer than the one held (an older status arriving late never overwrites a newer one); 212
Encaissée records the payment date. An invalid or hostile file, or a status of an invoice we did
not deposit, is set aside with its French reason (exchange row `quarantaine`) while the others
still apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from postier.domain.lifecycle import CASHED, NEEDS_ATTENTION, LifecycleStatus, parse_lifecycle
from postier.errors import ReturnFileError
from postier.pipeline.context import Environment

KIND = "cycle_de_vie"
PARTNER = "PLATEFORME"


@dataclass
class LifecycleSummary:
    applied: list[str] = field(default_factory=list)
    #: Statuses the clerk must act on (207 En litige, 210 Refusée, 213 Rejetée), with reasons.
    attention: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)


def import_files(env: Environment, paths: list[Path], *, by: str) -> LifecycleSummary:
    """`postier plateforme importer FICHIER…`: apply lifecycle files read from disk."""
    summary = LifecycleSummary()
    with env.connect() as conn:
        for path in paths:
            try:
                statuses = parse_lifecycle(path.read_bytes())
            except (ReturnFileError, OSError) as error:
                _quarantine(conn, path.name, str(error), by, summary)
                continue
            for status in statuses:
                apply_status(conn, status, path.name, by, summary)
    return summary


def apply_status(
    conn: psycopg.Connection, s: LifecycleStatus, source: str, by: str, summary: LifecycleSummary
) -> None:
    with conn.transaction():
        row = conn.execute(
            "SELECT f.invoice_id FROM plateforme_flows f JOIN invoices i ON i.id = f.invoice_id "
            "WHERE i.number = %s AND f.status = 'deposee' FOR UPDATE OF f",
            (s.invoice_number,),
        ).fetchone()
        if row is None:
            reason = (
                f"statut {s} pour la facture {s.invoice_number}, inconnue ou jamais déposée sur "
                "la plateforme agréée"
            )
            _quarantine(conn, source, reason, by, summary)
            return
        invoice_id = row[0]
        seen = conn.execute(
            "SELECT 1 FROM exchanges WHERE invoice_id = %s AND kind = %s AND status = %s "
            "AND (report->>'date')::timestamptz = %s",
            (invoice_id, KIND, s.code, s.at),
        ).fetchone()
        if seen:
            return
        report = {
            "code": s.code,
            "libelle": s.label,
            "date": s.at.isoformat(),
            "motif": s.reason,
            "fichier": source,
        }
        conn.execute(
            "INSERT INTO exchanges (invoice_id, kind, partner, status, report, by) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (invoice_id, KIND, PARTNER, s.code, Jsonb(report), by),
        )
        conn.execute(
            "UPDATE plateforme_flows SET lifecycle_status = %s, lifecycle_at = %s, "
            "lifecycle_reason = %s WHERE invoice_id = %s "
            "AND (lifecycle_at IS NULL OR lifecycle_at <= %s)",
            (s.code, s.at, s.reason or None, invoice_id, s.at),
        )
        if s.code == CASHED:
            conn.execute(
                "UPDATE plateforme_flows SET paid_at = %s WHERE invoice_id = %s",
                (s.at, invoice_id),
            )
    summary.applied.append(f"{s.invoice_number} : {s}")
    if s.code in NEEDS_ATTENTION:
        summary.attention.append(f"{s.invoice_number} : {s}")


def _quarantine(
    conn: psycopg.Connection, source: str, reason: str, by: str, summary: LifecycleSummary
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO exchanges (invoice_id, kind, partner, status, report, by) "
            "VALUES (NULL, %s, %s, 'quarantaine', %s, %s)",
            (KIND, PARTNER, Jsonb({"fichier": source, "motif": reason}), by),
        )
    summary.quarantined.setdefault(source, reason)
