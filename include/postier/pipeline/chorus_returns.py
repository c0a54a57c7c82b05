"""Chorus Pro returns (`chorus_retours`): read `out/`, apply each file once, report in French.

For each file of the source's `out/` folder, in name order:

1. download it and take its sha256;
2. in one transaction (serialised by an advisory lock): if a file of the same name or the same
   content was already applied, record it 'doublon' and apply nothing; otherwise parse it
   (`postier.domain.chorus_returns`), check that every flow and invoice it names is ours, write
   one exchange-log row per status and update the invoices' Chorus status, and record the file
   'traite'. Anything wrong with the file — malformed, hostile, unknown invoice or flow — rolls
   back what it started and records it 'quarantaine' with the French reason;
3. after the commit, move it to `processed/` (or `quarantine/`) and stamp the move.

So a file is never applied twice (unique indexes on applied names and contents), and never lost:
a crash before the commit leaves it in `out/` untouched, a crash after it leaves a recorded file
whose move the next run finishes. A file that cannot be read at all (network) stays in `out/`,
is listed in the report, and makes the run fail once the others are done.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from postier.domain.chorus_returns import (
    PARIS,
    FlowStatus,
    InvoiceStatus,
    ReturnDocument,
    StatusCode,
    is_utf8,
    parse_return_file,
    printable,
    set_aside_names,
    supersedes,
)
from postier.domain.limits import MAX_FILE_SIZE
from postier.domain.states import SendState
from postier.errors import DeliveryError, PostierError, ReturnFileError
from postier.pipeline.chorus import rejection_advice
from postier.pipeline.context import Environment
from postier.pipeline.reports import markdown_table as _table
from postier.pipeline.reports import publish, report_header, timing
from postier.pipeline.runs import open_run
from postier.storage import RunFolder
from postier.store.exchanges import Exchange, record_exchanges
from postier.store.settings import load_settings

log = logging.getLogger(__name__)

TREATMENT = "chorus_retours"
LABEL = "Retours Chorus Pro"
OUT, PROCESSED, QUARANTINE = "out", "processed", "quarantine"
APPLIED, DUPLICATE, QUARANTINED = "traite", "doublon", "quarantaine"
EXCHANGE_KIND, PARTNER = "retour_chorus", "CHORUS"

#: Serialises return-file transactions: two runs never apply the same file concurrently.
_RETURNS_LOCK = 4_242_008


class ReturnSource(Protocol):
    """Where Chorus return files are read: the Chorus SFTP in production, a folder in tests."""

    def list_returns(self) -> list[str]: ...

    def download(self, name: str) -> bytes: ...

    def move(self, name: str, folder: str) -> object:
        """Move `out/<name>` into the folder `out/<folder>/`, created if needed, under the first
        free name of `set_aside_names` (never replacing a file); where it went."""
        ...


class LocalReturnSource:
    """A local folder laid out like the Chorus SFTP (`delivery.chorus_sftp.ChorusSftp`): files
    in `out/`, set aside into `out/processed/` and `out/quarantine/`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"dossier local {self.root}"

    def list_returns(self) -> list[str]:
        folder = self.root / OUT
        if not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if not p.name.startswith(".") and (p.is_symlink() or p.is_file())
        )

    def download(self, name: str) -> bytes:
        path = self.root / OUT / _safe_name(name)
        try:
            # O_NOFOLLOW: a symlink planted in out/ must not make us read another file.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ReturnFileError("lien symbolique refusé : ce n'est pas un fichier") from None
            raise DeliveryError(
                f"lecture de {printable(name)} impossible ({exc.strerror})"
            ) from None
        with os.fdopen(fd, "rb") as stream:
            data = stream.read(MAX_FILE_SIZE + 1)
        if len(data) > MAX_FILE_SIZE:
            raise ReturnFileError(f"fichier trop volumineux (plus de {MAX_FILE_SIZE} octets)")
        return data

    def move(self, name: str, folder: str) -> str:
        target_dir = self.root / OUT / _safe_name(folder)
        target_dir.mkdir(parents=True, exist_ok=True)
        source = self.root / OUT / _safe_name(name)
        for candidate in set_aside_names(name):
            # link() never replaces an existing file: evidence already set aside stays.
            try:
                os.link(source, target_dir / candidate, follow_symlinks=False)
            except FileExistsError:
                continue
            os.unlink(source)
            return f"{folder}/{candidate}"
        raise DeliveryError(f"{folder}/ : aucun nom libre pour {printable(name)}")


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ReturnFileError(f"nom de fichier refusé : « {printable(name)} »")
    return name


# --- One run -----------------------------------------------------------------------------------


@dataclass
class _InvoiceState:
    id: int
    number: str
    debtor_siret: str
    flow_name: str | None
    code: str | None
    at: datetime | None
    deposited_at: datetime | None
    send_state: str
    channel: str
    #: A flow of ours named this invoice (its current one, or one recorded in chorus_flows).
    in_our_flow: bool
    #: Every flow the invoice was deposited in (the current one is `flow_name`).
    flows: set[str] = field(default_factory=set)


@dataclass
class _FileResult:
    row_id: int
    status: str
    folder: str
    report: dict[str, Any] = field(default_factory=dict)


def reconcile(
    env: Environment,
    source: ReturnSource,
    *,
    actor: str = "traitement-nocturne",
    external_id: str | None = None,
) -> dict[str, Any]:
    """Apply every new return file of `source`; a small summary (run id, counts, report path).

    Raises `DeliveryError` after the report is written when some file could not be read or
    moved (it stays in `out/` for the next run); bad files never fail the run: quarantine.
    """
    ref = external_id or f"{TREATMENT}/local-{uuid.uuid4().hex[:12]}"
    errors: list[dict[str, str]] = []
    with env.connect() as conn:
        run_id, folder = open_run(env, conn, TREATMENT, ref, {"source": repr(source)}, actor)
        conn.commit()
        supplier = str(load_settings(conn).values.get("EMETTEUR_SIRET", "") or "")
        conn.commit()
        try:
            names = source.list_returns()
        except (DeliveryError, OSError) as exc:
            names = []
            errors.append({"fichier": OUT + "/", "motif": f"liste des retours illisible : {exc}"})
        for name in names:
            try:
                _process_file(conn, source, name, run_id, actor, supplier)
            except (DeliveryError, OSError) as exc:
                conn.rollback()
                log.warning("Retour Chorus %s non traité : %s", printable(name), exc)
                errors.append({"fichier": printable(name), "motif": f"{exc} : laissé dans {OUT}/"})
        summary = _write_report(conn, run_id, folder, errors)
    if errors:
        raise DeliveryError(
            f"{len(errors)} fichier(s) de retour Chorus non lu(s) ou non déplacé(s) : relancez "
            f"(rapport {summary['rapport']})"
        )
    return summary


def _process_file(
    conn: psycopg.Connection,
    source: ReturnSource,
    name: str,
    run_id: int,
    actor: str,
    supplier: str,
) -> None:
    shown = printable(name)  # what the database, the report and the logs hold
    refused: ReturnFileError | None = None
    try:
        data = source.download(_safe_name(name))
    except ReturnFileError as exc:
        data, refused = b"", exc
    if not is_utf8(name):
        refused = ReturnFileError(
            "nom de fichier qui n'est pas de l'UTF-8 valide (octets invalides montrés en %XX)"
            + (f" ; {refused}" if refused else "")
        )
    digest = hashlib.sha256(data).hexdigest()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_RETURNS_LOCK,))
        result = _decide(conn, shown, data, digest, refused, run_id, actor, supplier)
    conn.commit()
    # Moved only once the outcome is committed: a crash in between leaves the file in out/ with
    # its row, and the next run only finishes the move (see _decide).
    where = str(source.move(name, result.folder))
    conn.execute(
        "UPDATE chorus_return_files SET moved_at = now(), "
        "report = report || jsonb_build_object('range_sous', %s::text) WHERE id = %s",
        (where, result.row_id),
    )
    conn.commit()
    log.info("Retour Chorus %s : %s → %s", shown, result.status, where)


def _decide(
    conn: psycopg.Connection,
    name: str,
    data: bytes,
    digest: str,
    refused: ReturnFileError | None,
    run_id: int,
    actor: str,
    supplier: str,
) -> _FileResult:
    previous = conn.execute(
        "SELECT id, name, sha256, received_at, moved_at FROM chorus_return_files "
        "WHERE status = %s AND (name = %s OR sha256 = %s) ORDER BY id LIMIT 1",
        (APPLIED, name, digest),
    ).fetchone()
    if previous and refused is None:
        prev_id, prev_name, prev_sha, prev_at, prev_moved = previous
        if prev_name == name and prev_sha == digest and prev_moved is None:
            return _FileResult(prev_id, APPLIED, PROCESSED)
        same = "même nom" if prev_name == name else "même contenu"
        when = prev_at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
        report = {
            "fichier": name,
            "motif": f"doublon ({same}) du fichier « {prev_name} » déjà appliqué le {when} "
            f"(n° {prev_id}) : rien n'a été appliqué de nouveau",
        }
        return _record(conn, name, digest, len(data), run_id, DUPLICATE, QUARANTINE, report)
    if refused is not None:
        return _quarantine(conn, name, digest, len(data), run_id, refused)
    try:
        with conn.transaction():  # savepoint: a refused file leaves nothing behind
            documents = parse_return_file(data)
            report = _apply(conn, documents, name, run_id, actor, supplier)
    except ReturnFileError as exc:
        return _quarantine(conn, name, digest, len(data), run_id, exc)
    except (ValueError, LookupError, ArithmeticError, RecursionError, psycopg.DataError) as exc:
        # A file that trips the parser or the database in a way nobody foresaw must not block
        # every later file: it goes to quarantine like any other bad file.
        log.exception("Retour Chorus %s : erreur inattendue", name)
        unexpected = ReturnFileError(f"fichier illisible (erreur inattendue {type(exc).__name__})")
        return _quarantine(conn, name, digest, len(data), run_id, unexpected)
    return _record(conn, name, digest, len(data), run_id, APPLIED, PROCESSED, report)


def _quarantine(
    conn: psycopg.Connection, name: str, digest: str, size: int, run_id: int, exc: PostierError
) -> _FileResult:
    log.warning("Retour Chorus %s mis en quarantaine : %s", name, exc)
    report = {
        "fichier": name,
        "motif": f"{exc} : fichier mis en quarantaine, rien n'a été appliqué",
    }
    return _record(conn, name, digest, size, run_id, QUARANTINED, QUARANTINE, report)


def _record(
    conn: psycopg.Connection,
    name: str,
    digest: str,
    size: int,
    run_id: int,
    status: str,
    folder: str,
    report: dict[str, Any],
) -> _FileResult:
    row = conn.execute(
        "INSERT INTO chorus_return_files (name, sha256, size, run_id, status, report, folder) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (name, digest, size, run_id, status, Jsonb(report), folder),
    ).fetchone()
    assert row is not None
    return _FileResult(int(row[0]), status, folder, report)


# --- Applying the statuses of one file -----------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    """One status for one invoice, from a flow status or an invoice status."""

    invoice_number: str
    status: StatusCode
    at: datetime
    return_flow: str
    deposited_flow: str | None
    comment: str
    rejected: bool
    reason: str


def _apply(
    conn: psycopg.Connection,
    documents: list[ReturnDocument],
    name: str,
    run_id: int,
    actor: str,
    supplier: str,
) -> dict[str, Any]:
    flows = [(d.flow_id, f) for d in documents for f in d.flows]
    invoices = [(d.flow_id, s) for d in documents for s in d.invoices]
    states = _lock_invoices(
        conn,
        numbers={s.invoice_number for _, s in invoices},
        flow_names={f.flow_name for _, f in flows},
    )
    events = [_invoice_event(flow_id, s, states, supplier) for flow_id, s in invoices]
    for flow_id, fs in flows:
        events += _flow_events(flow_id, fs, states)
    lines: list[dict[str, Any]] = []
    updates: list[tuple[Any, ...]] = []
    exchanges: list[Exchange] = []
    for event in sorted(events, key=lambda e: (e.at, e.status.rank, e.invoice_number)):
        state = states[event.invoice_number]
        line = _apply_event(state, event, name, run_id, actor, updates, exchanges)
        lines.append(line)
    # Written once the file is decided, in event order: a few statements per file rather than
    # two round trips per status (a return file may carry thousands).
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE invoices SET chorus_status = %s, chorus_status_at = %s, "
            "chorus_deposited_at = CASE WHEN %s THEN NULL ELSE chorus_deposited_at END "
            "WHERE id = %s",
            updates,
        )
    record_exchanges(conn, exchanges)
    return {
        "fichier": name,
        "flux_retour": sorted({d.flow_id for d in documents}),
        "statuts": lines,
        "motif": f"{len(lines)} statut(s) lu(s), "
        f"{sum(1 for line in lines if line['applique'])} appliqué(s)",
    }


def _lock_invoices(
    conn: psycopg.Connection, numbers: set[str], flow_names: set[str]
) -> dict[str, _InvoiceState]:
    """The invoices the file names, locked; flows are found by their recorded invoices
    (`chorus_flow_invoices`) and by the invoices' current flow name."""
    names = sorted(flow_names)
    rows = conn.execute(
        "SELECT i.id, i.number, coalesce(c.siret, ''), i.chorus_flow_name, i.chorus_status, "
        "i.chorus_status_at, i.chorus_deposited_at, i.send_state, c.channel, "
        "i.chorus_flow_name IS NOT NULL "
        "OR EXISTS (SELECT 1 FROM chorus_flow_invoices fi WHERE fi.invoice_id = i.id) "
        "FROM invoices i JOIN customers c ON c.id = i.customer_id "
        "WHERE i.number = ANY(%(numbers)s::text[]) OR i.chorus_flow_name = ANY(%(flows)s::text[]) "
        "OR i.id IN (SELECT fi.invoice_id FROM chorus_flow_invoices fi "
        "  JOIN chorus_flows f ON f.id = fi.flow_id WHERE f.name = ANY(%(flows)s::text[])) "
        "ORDER BY i.id FOR UPDATE OF i",
        {"numbers": sorted(numbers), "flows": names},
    ).fetchall()
    states = {r[1]: _InvoiceState(*r) for r in rows}
    by_id = {s.id: s for s in states.values()}
    for s in states.values():
        if s.flow_name in flow_names:
            s.flows.add(s.flow_name)
    for invoice_id, flow in conn.execute(
        "SELECT fi.invoice_id, f.name FROM chorus_flow_invoices fi "
        "JOIN chorus_flows f ON f.id = fi.flow_id WHERE f.name = ANY(%s::text[])",
        (names,),
    ):
        by_id[invoice_id].flows.add(flow)
    unknown = sorted(numbers - states.keys())
    if unknown:
        raise ReturnFileError(
            f"facture(s) inconnue(s) : {', '.join(unknown)} (IdFacture sans facture de ce numéro)"
        )
    # A status is about a deposit: an invoice no flow of ours carried (paper, « En attente »…)
    # cannot have one, whatever its number says.
    never = sorted(n for n in numbers if not states[n].in_our_flow)
    if never:
        raise ReturnFileError(
            "statut pour une facture jamais déposée sur Chorus Pro par Postier : "
            + ", ".join(
                f"{n} (« {SendState(states[n].send_state).label} », canal {states[n].channel})"
                for n in never
            )
        )
    known_flows = {f for s in states.values() for f in s.flows}
    missing = sorted(flow_names - known_flows)
    if missing:
        raise ReturnFileError(
            f"flux déposé(s) inconnu(s) : {', '.join(missing)} (aucune facture déposée sous ce nom)"
        )
    return states


def _invoice_event(
    flow_id: str, st: InvoiceStatus, states: dict[str, _InvoiceState], supplier: str
) -> _Event:
    if supplier and st.supplier_id != supplier:
        raise ReturnFileError(
            f"facture {st.invoice_number} : fournisseur {st.supplier_id}, ce n'est pas notre "
            f"SIRET ({supplier})"
        )
    state = states[st.invoice_number]
    if st.debtor_id != state.debtor_siret.strip():
        raise ReturnFileError(
            f"facture {st.invoice_number} : débiteur {st.debtor_id} différent du SIRET du client "
            f"({state.debtor_siret.strip() or 'non renseigné'}) : facture inconnue pour ce débiteur"
        )
    reason = st.comment or ("motif non précisé par Chorus Pro" if st.status.rejection else "")
    return _Event(
        st.invoice_number,
        st.status,
        st.at,
        flow_id,
        state.flow_name,
        st.comment,
        st.status.rejection,
        reason if st.status.rejection else "",
    )


def _flow_events(flow_id: str, fs: FlowStatus, states: dict[str, _InvoiceState]) -> list[_Event]:
    members = sorted(n for n, s in states.items() if fs.flow_name in s.flows)
    # Error lines whose IdLigne names an invoice of the flow reject that invoice (partial
    # integration, 96); the others are about the flow and are reported with it.
    general = " ; ".join(
        p for p in [fs.comment, *(str(e) for e in fs.errors if e.line_id not in members)] if p
    )
    events = []
    for number in members:
        own = fs.invoice_errors(number)
        rejected = fs.status.rejection or bool(own)
        reason = " ; ".join(
            p for p in [general if fs.status.rejection else "", *map(str, own)] if p
        )
        events.append(
            _Event(
                number,
                fs.status,
                fs.at,
                flow_id,
                fs.flow_name,
                fs.comment,
                rejected,
                (reason or "motif non précisé par Chorus Pro") if rejected else general,
            )
        )
    return events


def _apply_event(
    state: _InvoiceState,
    event: _Event,
    name: str,
    run_id: int,
    actor: str,
    updates: list[tuple[Any, ...]],
    exchanges: list[Exchange],
) -> dict[str, Any]:
    """Decide one status against the invoice's known state (kept up to date in `state`); the
    report line. The rows to write are appended to `updates` and `exchanges`."""
    stale = ""
    if event.deposited_flow and state.flow_name and event.deposited_flow != state.flow_name:
        stale = f"flux antérieur : la facture a été déposée de nouveau ({state.flow_name})"
    elif event.rejected and state.deposited_at and event.at < state.deposited_at:
        stale = f"rejet antérieur au dernier dépôt du {_fr(state.deposited_at)}"
    applied = not stale and supersedes(
        event.status, event.at, state.code, state.at, state.deposited_at
    )
    if applied:
        updates.append((event.status.code, event.at, event.rejected, state.id))
        state.code, state.at = event.status.code, event.at
        if event.rejected:
            state.deposited_at = None
    note = (
        ""
        if applied
        else (stale or f"statut antérieur au statut connu ({state.code} du {_fr(state.at)})")
        + " : non appliqué"
    )
    if event.rejected and applied:
        note = rejection_advice(event.status.code)
    line = {
        "facture": event.invoice_number,
        "code": event.status.code,
        "libelle": event.status.label,
        "type": event.status.kind.value,
        "date_statut": event.at.isoformat(timespec="seconds"),
        "applique": applied,
        "rejet": event.rejected,
        "motif": event.reason,
        "note": note,
    }
    exchanges.append(
        Exchange(
            state.id,
            run_id,
            EXCHANGE_KIND,
            PARTNER,
            event.status.code,
            {
                "rapport": f"retour du flux EDI : {event.status.code} {event.status.label}",
                "code": event.status.code,
                "libelle": event.status.label,
                "date_statut": line["date_statut"],
                "fichier": name,
                "flux_retour": event.return_flow,
                "flux_depose": event.deposited_flow,
                "commentaire": event.comment,
                "rejet": event.rejected,
                "motif": event.reason,
                "applique": applied,
                "note": note,
            },
            actor,
        ),
    )
    return line


def _fr(at: datetime | None) -> str:
    return at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M") if at else "?"


# --- Report --------------------------------------------------------------------------------------


def _write_report(
    conn: psycopg.Connection, run_id: int, folder: RunFolder, errors: list[dict[str, str]]
) -> dict[str, Any]:
    run = conn.execute(
        "SELECT triggered_by, started_at FROM runs WHERE id = %s", (run_id,)
    ).fetchone()
    assert run is not None
    files = conn.execute(
        "SELECT name, status, report FROM chorus_return_files WHERE run_id = %s ORDER BY id",
        (run_id,),
    ).fetchall()
    started: datetime = run[1]
    by_status: dict[str, list[dict[str, Any]]] = {APPLIED: [], DUPLICATE: [], QUARANTINED: []}
    for _name, status, file_report in files:
        by_status[status].append(file_report)
    lines = [line | {"fichier": r["fichier"]} for r in by_status[APPLIED] for line in r["statuts"]]
    # Only rejections that took effect: a stale one asks the clerk for nothing.
    rejections = [line for line in lines if line["rejet"] and line["applique"]]
    counts = {
        "fichiers": len(files) + len(errors),
        "traites": len(by_status[APPLIED]),
        "doublons": len(by_status[DUPLICATE]),
        "quarantaine": len(by_status[QUARANTINED]),
        "non_lus": len(errors),
        "statuts": len(lines),
        "appliques": sum(1 for line in lines if line["applique"]),
        "rejets": len(rejections),
    }
    report: dict[str, Any] = {
        "execution": run_id,
        "traitement": TREATMENT,
        "libelle": LABEL,
        "statut": "incomplète : fichiers non lus, laissés dans out/" if errors else "terminée",
        "lance_par": run[0],
        **timing(started),
        "compteurs": counts,
        "rejets": rejections,
        "statuts": lines,
        "quarantaine": [
            {"fichier": r["fichier"], "motif": r["motif"], "range_sous": r.get("range_sous", "")}
            for r in by_status[QUARANTINED]
        ],
        "doublons": [{"fichier": r["fichier"], "motif": r["motif"]} for r in by_status[DUPLICATE]],
        "non_lus": errors,
    }
    status = "en_erreur" if errors else "terminee"
    md_path = publish(conn, run_id, folder, report, status, to_markdown)
    return {"execution": run_id, "compteurs": counts, "rapport": md_path}


def to_markdown(report: dict[str, Any]) -> str:
    c = report["compteurs"]
    out = report_header(report) + [
        "",
        "| Fichiers | Traités | Doublons | Quarantaine | Non lus | Statuts | Appliqués | Rejets |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c['fichiers']} | {c['traites']} | {c['doublons']} | {c['quarantaine']} "
        f"| {c['non_lus']} | {c['statuts']} | {c['appliques']} | {c['rejets']} |",
        "",
    ]
    out += _table(
        "Factures rejetées par Chorus Pro : que faire",
        ["Facture", "Statut", "Motif", "Fichier", "Que faire"],
        (
            [r["facture"], f"{r['code']} {r['libelle']}", r["motif"], r["fichier"], r["note"]]
            for r in report["rejets"]
        ),
    )
    out += _table(
        "Fichiers mis en quarantaine",
        ["Fichier", "Motif", "Rangé sous"],
        ([q["fichier"], q["motif"], q.get("range_sous", "")] for q in report["quarantaine"]),
    )
    out += _table(
        "Doublons (rien n'a été appliqué)",
        ["Fichier", "Motif"],
        ([d["fichier"], d["motif"]] for d in report["doublons"]),
    )
    out += _table(
        "Fichiers non lus (laissés dans out/, repris à la prochaine exécution)",
        ["Fichier", "Motif"],
        ([e["fichier"], e["motif"]] for e in report["non_lus"]),
    )
    out += _table(
        "Statuts reçus",
        ["Facture", "Statut", "Date", "Appliqué", "Note"],
        (
            [
                s["facture"],
                f"{s['code']} {s['libelle']}",
                s["date_statut"],
                "oui" if s["applique"] else "non",
                s["note"],
            ]
            for s in report["statuts"]
        ),
    )
    return "\n".join(out)
