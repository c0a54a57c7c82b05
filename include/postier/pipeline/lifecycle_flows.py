"""Poll the Plateforme Agréée for lifecycle flows (`plateforme_cycle_de_vie`), apply, report.

One run:

1. search the PA (`POST /v1/flows/search`, flowType `CustomerInvoiceLC`) for the flows updated
   after the watermark held in the database, oldest first, page after page;
2. for each flow not yet recorded: download its CDAR (`GET /v1/flows/{flowId}`, Original), then
   in ONE transaction (serialised by an advisory lock) validate it against the CDAR schema and
   apply its statuses (`pipeline.lifecycle`), or quarantine it with its French reason, record the
   flow by its flowId and move the watermark up to it;
3. write the run report: statuses applied, 207/210/213 with their reason, 212 payments, flows
   set aside.

So a flow is never applied twice (recorded by flowId with its statuses), and nothing is lost: the
watermark only passes flows that are recorded, and never the time of a flow still waiting (two
flows may share one `updatedAt`) nor a time further ahead of our clock than `CLOCK_SKEW` (a flow
the PA dates in the future). A file is read up to the parser's size limit and no further.
When the PA cannot be reached, or stops answering mid-run, the run keeps what it recorded, writes
its report and fails with the reason; the next run resumes from the watermark.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from postier.delivery.plateforme import (
    SEARCH_LIMIT,
    FlowClient,
    FlowMissing,
    FlowTooLarge,
    LifecycleFlow,
)
from postier.domain.lifecycle import CASHED, NEEDS_ATTENTION, PARIS, parse_lifecycle
from postier.domain.limits import MAX_FILE_SIZE
from postier.errors import ConfigurationError, DeliveryError, PostierError, ReturnFileError
from postier.pipeline.context import Environment
from postier.pipeline.lifecycle import LifecycleSummary, apply_statuses, quarantine
from postier.pipeline.reports import markdown_table as _table
from postier.pipeline.reports import publish, report_header, timing
from postier.pipeline.runs import open_run
from postier.storage import RunFolder

log = logging.getLogger(__name__)

TREATMENT = "plateforme_cycle_de_vie"
LABEL = "Cycle de vie des factures (plateforme agréée)"
APPLIED, QUARANTINED = "applique", "quarantaine"

#: Serialises the flows' transactions: two runs never apply the same flow concurrently.
_LIFECYCLE_LOCK = 4_242_018

#: How far ahead of our clock the PA's may be: a flow dated later than that (a wrong date on the
#: PA) is applied but does not move the watermark, which would otherwise skip every flow of the
#: months or years before that date.
CLOCK_SKEW = timedelta(minutes=5)

NO_PLATFORM = (
    "aucune plateforme agréée configurée (connexion Airflow « postier_plateforme », ou "
    "POSTIER_PLATEFORME_URL) : le cycle de vie des factures n'a pas été relevé"
)


class LifecyclePollError(DeliveryError):
    """The run stopped before it read every flow: the PA is down or the configuration is wrong."""


@dataclass
class _Run:
    id: int
    actor: str
    summary: LifecycleSummary = field(default_factory=LifecycleSummary)
    #: New flows read by this run: flowId, status, reason.
    flows: list[dict[str, str]] = field(default_factory=list)


def poll(
    env: Environment,
    client: FlowClient | None = None,
    *,
    actor: str = "traitement-planifie",
    external_id: str | None = None,
) -> dict[str, Any]:
    """Read and apply the new lifecycle flows; a small summary (run id, counts, report path).

    Raises `LifecyclePollError` once the report is written when the PA could not be read to the
    end (nothing it did not give is lost: the next run starts from the watermark)."""
    if client is None and env.plateforme is None:
        raise ConfigurationError(NO_PLATFORM)
    ref = external_id or f"{TREATMENT}/local-{uuid.uuid4().hex[:12]}"
    where = client.config.where if client else env.plateforme.where  # type: ignore[union-attr]
    error = ""
    with env.connect() as conn:
        run_id, output_dir = open_run(env, conn, TREATMENT, ref, {"plateforme": where}, actor)
        run = _Run(run_id, actor)
        conn.commit()
        own = client is None
        pa = client or FlowClient(env.plateforme)  # type: ignore[arg-type]
        try:
            _read_all(conn, pa, run)
        except PostierError as exc:
            conn.rollback()
            log.warning("Cycle de vie non relevé jusqu'au bout : %s", exc)
            error = str(exc)
        finally:
            if own:
                pa.close()
        summary = _write_report(conn, run, output_dir, error)
    if error:
        raise LifecyclePollError(
            f"cycle de vie relevé en partie seulement : {error} ; ce qui a été lu est appliqué, "
            f"la prochaine exécution reprendra la suite (rapport {summary['rapport']})"
        )
    return summary


def watermark(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute("SELECT updated_after FROM plateforme_lifecycle_watermark").fetchone()
    return None if row is None else row[0]


def _read_all(conn: psycopg.Connection, pa: FlowClient, run: _Run) -> None:
    cursor = watermark(conn)
    conn.commit()
    seen: set[str] = set()
    while True:
        page, full = pa.lifecycle_flows(cursor, limit=SEARCH_LIMIT)
        latest = datetime.now(UTC) + CLOCK_SKEW
        fresh = [f for f in page if f.flow_id not in seen]
        for i, flow in enumerate(fresh):
            seen.add(flow.flow_id)
            following = fresh[i + 1].updated_at if i + 1 < len(fresh) else None
            # The watermark may pass this flow's time only when no other flow of that same time
            # can still be waiting: the next one is later, or this is the very last one.
            passes = following > flow.updated_at if following else not full
            if passes and flow.updated_at > latest:
                log.warning(
                    "Flux de cycle de vie %s daté du %s, dans le futur : le point de reprise "
                    "n'avance pas jusque-là",
                    flow.flow_id,
                    flow.updated_at.isoformat(),
                )
                passes = False
            _read_one(conn, pa, run, flow, flow.updated_at if passes else None)
        if not full:
            return
        # The next page starts just before the last time seen, so that flows sharing it are not
        # skipped (those already read are recognised); a page with nothing new moves on.
        newest = page[-1].updated_at
        following = newest - timedelta(microseconds=1) if fresh else newest
        if cursor is not None and following <= cursor:
            # A PA that ignores `updatedAfter` would give this page forever: stop here, the
            # next run starts again from the watermark.
            log.warning("La plateforme agréée renvoie la même page de flux : relevé arrêté")
            return
        cursor = following


def _read_one(
    conn: psycopg.Connection,
    pa: FlowClient,
    run: _Run,
    flow: LifecycleFlow,
    mark: datetime | None,
) -> None:
    known = _recorded(conn, flow.flow_id)
    conn.commit()
    if known:
        with conn.transaction():
            _move_watermark(conn, mark)
        return
    refused = ""
    try:
        # The size the parser accepts, checked while reading: a larger file is never held.
        data = pa.download(flow.flow_id, max_size=MAX_FILE_SIZE)
    except (FlowMissing, FlowTooLarge) as exc:
        data, refused = b"", str(exc)
    source = f"flux {flow.flow_id}"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LIFECYCLE_LOCK,))
        if _recorded(conn, flow.flow_id):  # read meanwhile by another run
            return
        reasons: list[str] = []
        if not refused:
            done = LifecycleSummary()  # merged into the run's once the file is applied
            try:
                with conn.transaction():  # savepoint: a refused file leaves nothing behind
                    statuses = parse_lifecycle(data)
                    reasons = apply_statuses(conn, statuses, source, run.actor, done, run_id=run.id)
                run.summary.merge(done)
            except ReturnFileError as exc:
                refused = str(exc)
            except (ValueError, LookupError, ArithmeticError, RecursionError, psycopg.DataError):
                # A file that trips the parser or the database in a way nobody foresaw must not
                # block every later flow: it is set aside like any other bad file.
                log.exception("Flux de cycle de vie %s : erreur inattendue", flow.flow_id)
                refused = "fichier illisible (erreur inattendue) : mis de côté"
        if refused:
            quarantine(conn, source, refused, run.actor, run.summary, run_id=run.id)
            reasons = [refused]
        status = QUARANTINED if reasons else APPLIED
        reason = " ; ".join(reasons)[:2000] or None
        conn.execute(
            "INSERT INTO plateforme_lifecycle_flows (flow_id, updated_at, status, sha256, "
            "reason, run_id) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                flow.flow_id,
                flow.updated_at,
                status,
                hashlib.sha256(data).hexdigest() if data else None,
                reason,
                run.id,
            ),
        )
        _move_watermark(conn, mark)
    run.flows.append({"flux": flow.flow_id, "statut": status, "motif": reason or ""})
    log.info("Flux de cycle de vie %s : %s", flow.flow_id, status)


def _recorded(conn: psycopg.Connection, flow_id: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM plateforme_lifecycle_flows WHERE flow_id = %s", (flow_id,)
    ).fetchone()
    return found is not None


def _move_watermark(conn: psycopg.Connection, mark: datetime | None) -> None:
    """In the caller's transaction: up to `mark`, never down."""
    if mark is None:
        return
    conn.execute(
        "INSERT INTO plateforme_lifecycle_watermark (updated_after) VALUES (%s) "
        "ON CONFLICT (only_row) DO UPDATE SET updated_after = EXCLUDED.updated_after, "
        "moved_at = now() "
        "WHERE plateforme_lifecycle_watermark.updated_after < EXCLUDED.updated_after",
        (mark,),
    )


# --- Report --------------------------------------------------------------------------------------


def _write_report(
    conn: psycopg.Connection, run: _Run, output_dir: RunFolder, error: str
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT triggered_by, started_at FROM runs WHERE id = %s", (run.id,)
    ).fetchone()
    assert row is not None
    mark = watermark(conn)
    s = run.summary
    lines = s.lines
    attention = [line for line in lines if line["code"] in NEEDS_ATTENTION]
    payments = [line for line in lines if line["code"] == CASHED]
    set_aside = [f for f in run.flows if f["statut"] == QUARANTINED]
    counts = {
        "flux": len(run.flows),
        "appliques": len(run.flows) - len(set_aside),
        "quarantaine": len(set_aside),
        "statuts": len(lines),
        "a_traiter": len(attention),
        "encaissements": len(payments),
    }
    report: dict[str, Any] = {
        "execution": run.id,
        "traitement": TREATMENT,
        "libelle": LABEL,
        "statut": (
            f"incomplète : {error} ; la prochaine exécution reprendra la suite"
            if error
            else "terminée"
        ),
        "lance_par": row[0],
        **timing(row[1]),
        "compteurs": counts,
        "releve_jusqu_au": mark.astimezone(PARIS).isoformat(timespec="seconds") if mark else "",
        "a_traiter": attention,
        "encaissements": payments,
        "statuts": lines,
        "quarantaine": set_aside,
        "erreur": error,
    }
    md_path = publish(
        conn, run.id, output_dir, report, "en_erreur" if error else "terminee", to_markdown
    )
    return {"execution": run.id, "compteurs": counts, "rapport": str(md_path)}


def to_markdown(report: dict[str, Any]) -> str:
    c = report["compteurs"]
    out = report_header(report) + [
        f"- Flux relevés jusqu'au : {report['releve_jusqu_au'] or '—'}",
        "",
        "| Flux lus | Appliqués | Quarantaine | Statuts | À traiter | Encaissements |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {c['flux']} | {c['appliques']} | {c['quarantaine']} | {c['statuts']} "
        f"| {c['a_traiter']} | {c['encaissements']} |",
        "",
    ]
    if report["erreur"]:
        out += [f"**Relevé interrompu** : {report['erreur']}", ""]
    out += _table(
        "À traiter : factures refusées, rejetées ou en litige",
        ["Facture", "Statut", "Motif", "Date"],
        (
            [r["facture"], f"{r['code']} {r['libelle']}", r["motif"], r["date_statut"]]
            for r in report["a_traiter"]
        ),
    )
    out += _table(
        "Encaissements (212)",
        ["Facture", "Encaissée le"],
        ([r["facture"], r["date_statut"]] for r in report["encaissements"]),
    )
    out += _table(
        "Flux mis en quarantaine",
        ["Flux", "Motif"],
        ([q["flux"], q["motif"]] for q in report["quarantaine"]),
    )
    out += _table(
        "Statuts reçus",
        ["Facture", "Statut", "Date", "Devenu le statut courant", "Flux"],
        (
            [
                r["facture"],
                f"{r['code']} {r['libelle']}",
                r["date_statut"],
                "oui" if r["courant"] else "non (plus ancien que le statut connu)",
                r["fichier"],
            ]
            for r in report["statuts"]
        ),
    )
    return "\n".join(out)
