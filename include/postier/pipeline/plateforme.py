"""Deposit the sent invoices of `plateforme` customers on our Plateforme Agréée, one flow each.

What is deposited is the archived signed Factur-X: exactly the bytes held in the GED (sha256
checked against the `documents` row).

Exactly once, per invoice (each step commits on its own):
1. a `plateforme_flows` row (`preparee`, trackingId = a stable id of the invoice, sha256) is
   committed BEFORE the upload;
2. the upload; then, in one transaction, the row `deposee` with the PA's flowId, and an
   exchange-log row on the invoice;
3. a refusal (400/413/422) makes the row `refusee` with the PA's reason, logged on the invoice;
   depositing the same immutable file again would get the same answer.
A row still `preparee` when a run starts was left by an unknown outcome (timeout after the file
was sent, crash): the run first searches the PA for its trackingId and deposits only when the PA
has no such flow. When the PA is unavailable the run stops depositing; what is left is taken by
the next run, nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from postier.delivery.plateforme import (
    FlowClient,
    FlowOutcomeUnknown,
    FlowRefused,
    PlatformUnavailable,
)
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.store.exchanges import Exchange, record_exchange

log = logging.getLogger(__name__)

#: Deposits queue on this session advisory lock: two sends running at once never both find the
#: same invoice without a flow, nor both search and deposit a `preparee` one.
_DEPOSIT_LOCK = 4_242_016

PARTNER = "PLATEFORME"
EXCHANGE_KIND = "depot_plateforme"

NO_PLATFORM = (
    "aucune plateforme agréée configurée (connexion Airflow « postier_plateforme », ou "
    "POSTIER_PLATEFORME_URL) : les factures des clients « plateforme » n'ont pas été déposées"
)
ADVICE_AFTER_REFUSAL = (
    "la facture envoyée n'est plus modifiable : corrigez la cause (fiche client, paramètres), "
    "puis établissez un avoir qui l'annule et une nouvelle facture"
)


def tracking_id(invoice_id: int) -> str:
    """The `trackingId` of an invoice's flow: stable across retries and runs (≤ 36 characters)."""
    return f"postier-facture-{invoice_id}"


@dataclass
class DepositSummary:
    """What a deposit run did, by invoice number; French reasons for the report."""

    deposited: list[str] = field(default_factory=list)
    #: Found on the PA by trackingId after an unknown outcome: not deposited a second time.
    found: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    #: Not deposited this time (PA unavailable, outcome unknown, no document): the next run.
    pending: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Candidate:
    invoice_id: int
    number: str
    document_id: int | None
    location: str | None
    sha256: str | None
    flow_status: str | None
    tracking_id: str | None


def _candidates(conn: psycopg.Connection) -> list[_Candidate]:
    """Sent invoices of `plateforme` customers without a deposited or refused flow."""
    rows = conn.execute(
        "SELECT i.id, i.number, d.id, d.location, d.sha256, f.status, f.tracking_id "
        "FROM invoices i JOIN customers c ON c.id = i.customer_id "
        "LEFT JOIN plateforme_flows f ON f.invoice_id = i.id "
        "LEFT JOIN LATERAL (SELECT id, location, sha256 FROM documents "
        "   WHERE invoice_id = i.id AND kind = 'facture' AND signed "
        "   ORDER BY version DESC LIMIT 1) d ON true "
        "WHERE c.channel = 'plateforme' AND i.send_state = 'ENVOYE' "
        "AND (f.status IS NULL OR f.status = 'preparee') ORDER BY i.number"
    ).fetchall()
    return [
        _Candidate(r[0], r[1], r[2], r[3], r[4].strip() if r[4] else None, r[5], r[6]) for r in rows
    ]


def deposit_pending(
    env: Environment,
    *,
    by: str,
    run_id: int | None = None,
    client: FlowClient | None = None,
) -> DepositSummary:
    """Deposit every sent `plateforme` invoice not yet on the PA (see the module's steps)."""
    summary = DepositSummary()
    with env.connect() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_DEPOSIT_LOCK,))
        conn.commit()
        try:
            candidates = _candidates(conn)
            conn.commit()
            if not candidates:
                return summary
            if env.plateforme is None:
                raise ConfigurationError(NO_PLATFORM)
            own = client is None
            client = client or FlowClient(env.plateforme)
            try:
                _deposit_all(env, conn, client, candidates, summary, by=by, run_id=run_id)
            finally:
                if own:
                    client.close()
        finally:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(%s)", (_DEPOSIT_LOCK,))
            conn.commit()
    return summary


def _deposit_all(
    env: Environment,
    conn: psycopg.Connection,
    client: FlowClient,
    candidates: list[_Candidate],
    summary: DepositSummary,
    *,
    by: str,
    run_id: int | None,
) -> None:
    archive = env.archive()
    for n, c in enumerate(candidates):
        try:
            if c.flow_status == "preparee":
                if c.tracking_id is None:  # plateforme_flows.tracking_id is NOT NULL
                    raise RuntimeError(f"flux préparé sans trackingId : facture {c.number}")
                flow = client.find(c.tracking_id)
                if flow is not None:
                    _deposited(conn, c, flow.flow_id, by, run_id, found=True)
                    summary.found.append(c.number)
                    continue
            if c.location is None or c.sha256 is None:
                summary.pending[c.number] = (
                    "aucun document signé archivé dans la GED pour cette facture : non déposée"
                )
                continue
            data = archive.read(c.location)
            if hashlib.sha256(data).hexdigest() != c.sha256:
                summary.pending[c.number] = (
                    "le PDF de la GED ne correspond plus à son empreinte (document modifié ?) : "
                    "non déposé"
                )
                continue
            tid = c.tracking_id or _record(conn, c, by, run_id)
            flow = client.deposit(data, name=f"{c.number}.pdf", tracking_id=tid, sha256=c.sha256)
            _deposited(conn, c, flow.flow_id, by, run_id, found=False)
            summary.deposited.append(c.number)
        except FlowRefused as error:
            _refused(conn, c, error, by, run_id)
            summary.refused[c.number] = f"{error} ; {ADVICE_AFTER_REFUSAL}"
        except FlowOutcomeUnknown as error:
            summary.pending[c.number] = f"dépôt incertain : {error}"
        except PlatformUnavailable as error:
            # The PA is down: the others would fail the same way; the next run deposits them.
            for rest in candidates[n:]:
                summary.pending[rest.number] = str(error)
            return


def _record(conn: psycopg.Connection, c: _Candidate, by: str, run_id: int | None) -> str:
    """Step 1: the flow is known to the database before any byte leaves."""
    tid = tracking_id(c.invoice_id)
    with conn.transaction():
        conn.execute(
            "INSERT INTO plateforme_flows (invoice_id, tracking_id, document_id, file_name, "
            "sha256, run_id, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (c.invoice_id, tid, c.document_id, f"{c.number}.pdf", c.sha256, run_id, by),
        )
    return tid


def _deposited(
    conn: psycopg.Connection,
    c: _Candidate,
    flow_id: str,
    by: str,
    run_id: int | None,
    *,
    found: bool,
) -> None:
    report: dict[str, Any] = {
        "rapport": (
            "flux retrouvé sur la plateforme agréée (dépôt précédent à l'issue inconnue) : "
            "pas de second dépôt"
            if found
            else "facture Factur-X signée déposée sur la plateforme agréée"
        ),
        "flux": flow_id,
        "trackingId": c.tracking_id or tracking_id(c.invoice_id),
    }
    with conn.transaction():
        conn.execute(
            "UPDATE plateforme_flows SET status = 'deposee', flow_id = %s, deposited_at = now() "
            "WHERE invoice_id = %s",
            (flow_id, c.invoice_id),
        )
        conn.execute(
            "UPDATE invoices SET dematerialized = true, dematerialized_channel = 'plateforme' "
            "WHERE id = %s",
            (c.invoice_id,),
        )
        record_exchange(
            conn, Exchange(c.invoice_id, run_id, EXCHANGE_KIND, PARTNER, "deposee", report, by)
        )


def _refused(
    conn: psycopg.Connection, c: _Candidate, error: FlowRefused, by: str, run_id: int | None
) -> None:
    report = {
        "rapport": str(error),
        "code": error.code,
        "http": error.status,
        "conseil": ADVICE_AFTER_REFUSAL,
    }
    with conn.transaction():
        conn.execute(
            "UPDATE plateforme_flows SET status = 'refusee', reason = %s WHERE invoice_id = %s",
            (str(error), c.invoice_id),
        )
        record_exchange(
            conn, Exchange(c.invoice_id, run_id, EXCHANGE_KIND, PARTNER, "refusee", report, by)
        )


def deposit_for_run(env: Environment, run_ref: int | str) -> dict[str, int]:
    """The send's deposit step: every pending `plateforme` invoice (of this run and of earlier
    ones the PA did not take), stamped with this run. Small counts for XCom."""
    from postier.pipeline.runs import resolve_run_id

    with env.connect() as conn:
        run_id = resolve_run_id(conn, run_ref)
        row = conn.execute("SELECT triggered_by FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    summary = deposit_pending(env, by=str(row[0]), run_id=run_id)
    counts = {
        "deposees": len(summary.deposited),
        "retrouvees": len(summary.found),
        "refusees": len(summary.refused),
        "en_attente": len(summary.pending),
    }
    for number, reason in summary.pending.items():
        log.warning("Facture %s non déposée : %s", number, reason)
    log.info(
        "Plateforme agréée : %(deposees)d déposée(s), %(retrouvees)d retrouvée(s), "
        "%(refusees)d refusée(s), %(en_attente)d en attente",
        counts,
    )
    return counts


def run_platform_summary(conn: psycopg.Connection, run_id: int) -> dict[str, Any] | None:
    """The PA deposits of a send for its report; None when the run sent no `plateforme`
    invoice and deposited none."""
    logged = conn.execute(
        "SELECT i.number, e.status, e.report FROM exchanges e JOIN invoices i ON i.id = "
        "e.invoice_id WHERE e.run_id = %s AND e.kind = %s ORDER BY i.number",
        (run_id, EXCHANGE_KIND),
    ).fetchall()
    pending = conn.execute(
        "SELECT i.number FROM run_items r JOIN invoices i ON i.id = r.invoice_id "
        "JOIN customers c ON c.id = i.customer_id "
        "LEFT JOIN plateforme_flows f ON f.invoice_id = i.id "
        "WHERE r.run_id = %s AND r.status = 'traitee' AND c.channel = 'plateforme' "
        "AND i.send_state = 'ENVOYE' AND (f.status IS NULL OR f.status = 'preparee') "
        "ORDER BY i.number",
        (run_id,),
    ).fetchall()
    if not logged and not pending:
        return None
    return {
        "deposees": sum(1 for _, status, _ in logged if status == "deposee"),
        "refusees": [
            {"facture": n, "motif": f"{report['rapport']} ; {report['conseil']}"}
            for n, status, report in logged
            if status == "refusee"
        ],
        "en_attente": [n for (n,) in pending],
    }
