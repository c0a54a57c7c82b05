"""Finalize a run (merged print files) and write its report: `runs` row, JSON and Markdown."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

import psycopg

from postier.domain.models import Invoice
from postier.domain.selection import PARAM_LABELS, PARIS, shown
from postier.domain.states import SEND_STATE_LABELS, SendState
from postier.domain.treatments import FINALIZED, SEND, Treatment, TreatmentId
from postier.errors import PostierError
from postier.pipeline.context import Environment
from postier.pipeline.runs import Run, RunRef, load_run, open_run, resolve_run_id
from postier.storage import RunFolder
from postier.store import runs as run_store
from postier.store.invoices import load_invoices
from postier.store.settings import load_settings

log = logging.getLogger(__name__)


class RunFailedError(PostierError):
    """The run's report is written, and says the run failed; `summary` is what XCom carries."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class RunIncompleteError(RunFailedError):
    """Some invoices of the run are still to be processed (a chunk failed)."""


#: Remarks shown in the Markdown report (all of them are in rapport.json).
MAX_REMARKS = 50


class NothingDoneError(RunFailedError):
    """Every invoice the run selected was refused: it did nothing."""


#: Run statuses (`runs.status`) and what the report says of each.
RUN_STATUS_LABELS = {
    "terminee": "terminée",
    "refusee": "envoi refusé à la confirmation : rien n'a été envoyé",
    "en_erreur": "incomplète : factures ou fichier d'impression non traités",
    "criteres_invalides": "refusé : critères invalides",
}
ALL_REFUSED = "échec : toutes les factures sélectionnées ont été refusées"
CONFIGURATION_FAILED = "échec : configuration à corriger, rien n'a été traité"
#: Why a run failed, in its report's `echec` (the run lists show it; `_outcome` reads it):
#: every selected invoice refused, or the run's print file not made.
EVERY_INVOICE_REFUSED = "toutes les factures sélectionnées ont été refusées"
PRINT_FILE_MISSING = "fichier d'impression non produit"
#: A run note is at most this long (Airflow's `dag_run_note.content`).
NOTE_MAX = 1000


STATUS_LABELS = {
    run_store.DONE: "traitée",
    run_store.SKIPPED: "ignorée",
    run_store.FAILED: "refusée",
    run_store.PENDING: "non traitée",
}


def finalize(env: Environment, ref: RunRef) -> list[str]:
    """The run's merged print-ready file, in selection order (print and bills treatments).

    Rendered again as one streamed file rather than concatenating the per-invoice PDFs: fonts
    are embedded once per block of invoices and memory stays flat whatever the volume. Nothing
    for a treatment outside `FINALIZED` (its DAG has no « Finaliser » task).
    """
    with env.connect() as conn:
        run = load_run(conn, ref, env.storage)
        if run.treatment.id not in FINALIZED:
            return []
        seller = load_settings(conn).seller()
        ids = run_store.run_ids_in_order(conn, run.id)
        if run.treatment.id is TreatmentId.IMPRIMER and ids:
            from postier.documents import write_print_stream

            name = "apercu.pdf" if run.preview else "impression.pdf"
            with run.folder.writer(name) as handle:
                pages, _ = write_print_stream(
                    _invoices_in_order(conn, ids), seller, handle, preview=run.preview
                )
        elif run.treatment.id is TreatmentId.CHORUS_RECUPERER:
            from postier.pipeline.chorus import write_zip

            return write_zip(conn, run)
        elif run.treatment.id is TreatmentId.EXPORTER_IMPRESSION:
            from postier.pipeline.export import export_archive

            archive = export_archive(env, run.id)
            return [archive] if archive else []
        elif run.treatment.id is TreatmentId.IMPRIMER_TRAITES and ids:
            from postier.documents import write_bills_print_stream

            name = "traites.pdf"
            with run.folder.writer(name) as handle:
                pages, _ = write_bills_print_stream(_invoices_in_order(conn, ids), seller, handle)
        else:
            return []
    path = run.folder.file_location(name)
    log.info("Fichier d'impression %s : %d page(s)", path, pages)
    return [path]


def _invoices_in_order(conn: psycopg.Connection, ids: Sequence[int]) -> Iterator[Invoice]:
    for start in range(0, len(ids), 500):
        yield from load_invoices(conn, ids[start : start + 500])


def timing(started: datetime) -> dict[str, Any]:
    """Start, end and duration of a run, for its report."""
    finished = datetime.now(PARIS)
    return {
        "debut": started.astimezone(PARIS).isoformat(timespec="seconds"),
        "fin": finished.isoformat(timespec="seconds"),
        "duree_s": round((finished - started).total_seconds(), 1),
    }


def report_header(report: dict[str, Any], suffix: str = "") -> list[str]:
    """The first lines of every run report: title, status, who, when."""
    return [
        f"# Rapport — {report['libelle']} (exécution {report['execution']})",
        "",
        f"- Statut : **{report['statut']}**",
        f"- Lancé par : **{report['lance_par']}**, début {report['debut']}, "
        f"durée {report['duree_s']} s{suffix}",
    ]


def markdown_cell(text: object) -> str:
    """Text (often the ERP's or a partner's) inside a Markdown table cell: on one line, its
    backslashes and pipes escaped, so that it shows as written and never splits the row."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(title: str, header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A titled Markdown table, or nothing when there is no row."""
    return list(markdown_table_lines(title, header, rows))


def markdown_table_lines(title: str, header: list[str], rows: Iterable[list[str]]) -> Iterator[str]:
    """`markdown_table`'s lines one at a time, its rows gone through once, never held."""
    remaining = iter(rows)
    first = next(remaining, None)
    if first is None:
        return
    yield from (f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header))
    for row in itertools.chain([first], remaining):
        yield "| " + " | ".join(markdown_cell(cell) for cell in row) + " |"
    yield ""


def publish(
    conn: psycopg.Connection,
    run_id: int,
    folder: RunFolder,
    report: dict[str, Any],
    status: str,
    markdown: Callable[[dict[str, Any]], str],
) -> str:
    """Write `rapport.json` and `rapport.md` (`markdown` of the report), close the `runs` row,
    log the Markdown; the report's location. The report of a run's invoices, whose lists are
    built in the row: `publish_listed`."""
    report["rapport"] = folder.file_location("rapport.md")
    with folder.writer("rapport.json") as handle:
        write_json(handle, report)
    text = markdown(report)
    md_path = folder.write("rapport.md", text.encode())
    run_store.finish_run(conn, run_id, status, report["compteurs"], report)
    log.info("\n%s", text)
    return md_path


#: The anomalies the task's log shows of a run's report (all of them are in rapport.md).
MAX_LOGGED_ANOMALIES = 50


def publish_listed(
    conn: psycopg.Connection, run_id: int, folder: RunFolder, report: dict[str, Any], status: str
) -> str:
    """`publish` for the report of a run's invoices (`write_report`), whose two lists
    (`anomalies`, `remarques`: as long as the run's problems) are never held in the task.
    PostgreSQL builds them in the row as it closes it (one UPDATE,
    `run_store.finish_run_with_lists`), then both files read them back from the row a few at a
    time (`rapport.md` byte for byte as `to_markdown` writes it), and the log shows the first
    MAX_LOGGED_ANOMALIES anomalies."""
    report["rapport"] = folder.file_location("rapport.md")
    anomalies, remarks = run_store.finish_run_with_lists(
        conn, run_id, status, report["compteurs"], report, STATUS_LABELS
    )

    def read(key: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        fields = ANOMALY_FIELDS if key == "anomalies" else REMARK_FIELDS
        return run_store.report_list(conn, run_id, key, fields, limit)

    with folder.writer("rapport.json") as handle:
        write_json(handle, report, {key: read(key) for key in ("anomalies", "remarques")})

    def markdown(shown: int | None) -> Iterator[str]:
        hidden = anomalies - shown if shown is not None else 0
        return markdown_lines(
            report,
            (read("anomalies", shown), max(0, hidden), "rapport.md"),
            (read("remarques", MAX_REMARKS), max(0, remarks - MAX_REMARKS), "rapport.json"),
        )

    with folder.writer("rapport.md") as handle:
        _write_text(handle, (line + "\n" for line in markdown(None)))
    log.info("\n%s", "".join(line + "\n" for line in markdown(MAX_LOGGED_ANOMALIES)))
    return folder.file_location("rapport.md")


#: Characters of text `write_json` (and `rapport.md`'s writer) gather before each write.
JSON_WRITE_CHARS = 64 * 1024


def _write_text(handle: IO[bytes], pieces: Iterable[str]) -> None:
    """`pieces` written to `handle` in UTF-8, gathered in writes of about JSON_WRITE_CHARS."""
    gathered: list[str] = []
    size = 0
    for piece in pieces:
        gathered.append(piece)
        size += len(piece)
        if size >= JSON_WRITE_CHARS:
            handle.write("".join(gathered).encode())
            gathered, size = [], 0
    handle.write("".join(gathered).encode())


def write_json(
    handle: IO[bytes],
    value: Mapping[str, Any],
    streamed: Mapping[str, Iterable[Any]] | None = None,
) -> None:
    """`value` written to `handle` as `json.dumps(value, ensure_ascii=False, indent=2,
    default=str)` encodes it, byte for byte, in pieces of about JSON_WRITE_CHARS, with each
    key of `streamed` given the elements of `streamed[key]`, gone through once, in place of
    `value`'s: `json.dumps` with an indent gathers every piece of the text in one list
    before joining them, about 7 times the text's size (12.7 MiB at the peak for 6,000
    anomalies and 6,000 remarks, 0.7 MiB in pieces), and a run's lists are never held whole."""
    _write_text(handle, _json_pieces(value, streamed or {}))


def _json_pieces(value: Mapping[str, Any], streamed: Mapping[str, Iterable[Any]]) -> Iterator[str]:
    """The text of `write_json`, piece by piece. Each member is `json.dumps`'d on its own with
    the same options; its lines (a JSON text's line breaks are all between tokens: one inside
    a string is written `\\n`) indented by its depth."""
    if not value:
        yield "{}"
        return
    for n, (key, member) in enumerate(value.items()):
        yield ("{" if n == 0 else ",") + "\n  " + _json(key) + ": "
        if key not in streamed:
            yield _json(member).replace("\n", "\n  ")
            continue
        elements, opened = iter(streamed[key]), False
        while batch := list(itertools.islice(elements, JSON_BATCH)):
            # "[\n  a,\n  b\n]": its elements, one level deeper.
            yield ("," if opened else "[") + "\n  " + _json(batch)[2:-2].replace("\n", "\n  ")
            opened = True
        yield "\n  ]" if opened else "[]"
    yield "\n}"


#: Elements of a streamed list `write_json` encodes together (one encoding's fixed cost).
JSON_BATCH = 256


_ENCODER = json.JSONEncoder(ensure_ascii=False, indent=2, default=str)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


class RefusedAtStartError(RunFailedError):
    """The run was refused at its start (invalid criteria, configuration): its report is
    written, with the reason."""


def refusal(report: dict[str, Any] | None) -> RefusedAtStartError | None:
    """The error of a run refused at its start (its report's reason), from its report; None for
    any other run."""
    if report and report.get("motif"):
        return RefusedAtStartError(report["motif"], _summary(report))
    return None


def write_report(
    env: Environment,
    ref: RunRef,
    files: list[str] | None = None,
    *,
    refused: bool = False,
    finalized: bool = True,
    again: bool = True,
) -> dict[str, Any] | None:
    """Record the run's outcome; a small summary for XCom (never documents, never secrets),
    with the run's `note` (its counts in one line, for the Airflow run).

    `refused`: the clerk rejected the confirmation (or it timed out): nothing was processed, on
    purpose. Otherwise, invoices left unprocessed, a print file that could not be made
    (`finalized` false), or every selected invoice refused make the run fail
    (`RunFailedError`) once the report is written. A run refused at its start (invalid criteria,
    configuration) already has its report: its reason is raised again (`RefusedAtStartError`).

    `again` false: None, writing nothing, when the report is already written and no invoice
    of the run changed since (another task wrote it, or this task before its retry): its counts
    are the run's. The run's row is locked meanwhile, so two tasks ending together write one
    report.
    """
    with env.connect() as conn:
        run = load_run(conn, ref, env.storage)
        run_id = run.id
        # Held until the report is committed: a second task waits here, then reads what the
        # first one wrote (a statement of its own: a fresh snapshot). NO KEY UPDATE: rows that
        # reference the run (e-mails and deposits of other sends) can still be written meanwhile.
        conn.execute("SELECT 1 FROM runs WHERE id = %s FOR NO KEY UPDATE", (run_id,))
        row = conn.execute(
            f"SELECT started_at, {run_store.REPORT_HEAD} FROM runs WHERE id = %s", (run_id,)
        ).fetchone()
        assert row is not None
        started: datetime = row[0]
        written: dict[str, Any] | None = row[1]
        if (refused_at_start := refusal(written)) is not None:
            # Refused at its start: the report is written; the run fails with its reason.
            raise refused_at_start
        counts = run_store.item_counts(conn, run_id)
        selected = sum(counts.values())
        counters = _counters(counts)
        deliveries = _deliveries(conn, run)
        # An invoice only ever leaves « à traiter »: the written report's counts are the run's
        # exactly when no invoice changed since it was written (times would not say it: a chunk
        # whose transaction began before the report was written may commit after it). A send's
        # deliveries too: e-mails and deposits made since (a retry or a « Clear » once the PA is
        # fixed) are reported.
        if written and not again and _is_current(written, counters, deliveries):
            return None
        pending = counts[run_store.PENDING]
        # A refusal leaves the selection untouched; a confirmation that left no answer but whose
        # chunks ran (e.g. marked approved) is not a refusal.
        refused = refused and pending > 0
        all_refused = counts[run_store.FAILED] > 0 and counts[run_store.DONE] == 0 and not pending
        failed = bool(pending) or not finalized or all_refused
        status = "refusee" if refused else ("en_erreur" if failed else "terminee")
        report: dict[str, Any] = {
            "execution": run_id,
            "traitement": run.treatment.id.value,
            "libelle": run.treatment.label,
            "mode": run.mode,
            "statut": _status_label(run, status, selected, all_refused and finalized),
            "lance_par": run.triggered_by,
            **timing(started),
            "criteres": run.criteria,
            "compteurs": counters,
            # Built by PostgreSQL in the run's row, then read back from it (`publish_listed`).
            "anomalies": [],
            "remarques": [],
            "fichiers": (files or []) + [run.folder.location],
        }
        # Why the run failed, for the run lists and for its outcome read again from the report
        # (`written_report`); `motif` is kept for runs refused at start.
        if not finalized:
            report["echec"] = PRINT_FILE_MISSING
        elif all_refused:
            report["echec"] = EVERY_INVOICE_REFUSED
        report.update(deliveries)

        publish_listed(conn, run_id, run.folder, report, status)
    return _outcome(run, report, status)


#: The fields of an anomaly and of a remark, in the report's order.
ANOMALY_FIELDS, REMARK_FIELDS = ("facture", "statut", "motif"), ("facture", "remarque")


def _counters(counts: dict[str, int]) -> dict[str, int]:
    """The report's counts of a run, from its invoices' `item_counts`."""
    return {
        "selectionnees": sum(counts.values()),
        "traitees": counts[run_store.DONE],
        "ignorees": counts[run_store.SKIPPED],
        "refusees": counts[run_store.FAILED],
        "non_traitees": counts[run_store.PENDING],
    }


def _deliveries(conn: psycopg.Connection, run: Run) -> dict[str, Any]:
    """A send's sections of its report: its e-mails, and its PA deposits when it has any; none
    for another treatment."""
    if run.treatment.transition is not SEND:
        return {}
    from postier.pipeline.mailing import run_mail_summary
    from postier.pipeline.plateforme import run_platform_summary

    sections: dict[str, Any] = {"courriels": run_mail_summary(conn, run.id)}
    deposits = run_platform_summary(conn, run.id)
    if deposits is not None:
        sections["plateforme"] = deposits
    return sections


def _is_current(
    written: dict[str, Any], counters: dict[str, int], deliveries: dict[str, Any]
) -> bool:
    """Whether a written report (without its lists) says what the run's invoices and a send's
    deliveries are now."""
    return bool(
        written["compteurs"] == counters
        and {key: written[key] for key in ("courriels", "plateforme") if key in written}
        == deliveries
    )


def written_report(env: Environment, ref: RunRef) -> dict[str, Any]:
    """The outcome of the report already written for the run, as `write_report` gave it (its
    summary, or its `RunFailedError`), writing nothing."""
    with env.connect() as conn:
        run = load_run(conn, ref, env.storage)
        row = conn.execute(
            f"SELECT status, {run_store.REPORT_HEAD} FROM runs WHERE id = %s", (run.id,)
        ).fetchone()
    assert row is not None and row[1], f"exécution {run.id} sans rapport"
    if (refused_at_start := refusal(row[1])) is not None:
        raise refused_at_start
    return _outcome(run, row[1], row[0])


def _outcome(run: Run, report: dict[str, Any], status: str) -> dict[str, Any]:
    """The summary of a written report, or the `RunFailedError` it says the run ends with (from
    the report alone: the same whichever task reads it, and however often)."""
    summary = _summary(report)
    if status != "en_erreur":
        return summary
    c, md_path = report["compteurs"], report["rapport"]
    pending, reason = c["non_traitees"], report.get("echec")
    if pending or reason != EVERY_INVOICE_REFUSED:
        print_file = (
            f", fichier d'impression {'non produit' if reason == PRINT_FILE_MISSING else 'produit'}"
            if run.treatment.id in FINALIZED
            else ""
        )
        raise RunIncompleteError(
            f"{pending} facture(s) non traitée(s){print_file} : relancez les tâches en échec "
            f"(rapport {md_path})",
            summary,
        )
    raise NothingDoneError(
        f"{c['refusees']} facture(s) sélectionnée(s), toutes refusées : voir leurs "
        f"motifs dans le rapport {md_path}",
        summary,
    )


def _status_label(run: Run, status: str, selected: int, all_refused: bool) -> str:
    if status == "terminee" and selected == 0 and run.treatment.transition is SEND:
        return f"terminée : {NOTHING_TO_SEND}"
    if status == "en_erreur" and all_refused:
        return ALL_REFUSED
    return RUN_STATUS_LABELS[status]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "execution": report["execution"],
        "compteurs": report["compteurs"],
        "rapport": report["rapport"],
        "note": run_note(report),
    }


def run_note(report: dict[str, Any]) -> str:
    """One line for the Airflow run (its note, shown in the grid): the status when something
    went wrong, then the counts that are not zero."""
    c = report["compteurs"]
    parts = [
        f"{c[key]} {label}"
        for key, label in (
            ("selectionnees", "sélectionnée(s)"),
            ("traitees", "traitée(s)"),
            ("ignorees", "ignorée(s)"),
            ("refusees", "refusée(s)"),
            ("non_traitees", "non traitée(s)"),
        )
        if c[key] or key == "selectionnees"
    ]
    note = " · ".join(parts)
    if report.get("motif"):
        note = f"{report['statut']} — {report['motif']}"
    elif not report["statut"].startswith(RUN_STATUS_LABELS["terminee"]):
        note = f"{report['statut']} — {note}"
    # Back to the run's page in Postier (report, files to download); the grid renders Markdown.
    link = f" · [rapport](/postier/executions/{report['execution']})"
    if len(note) + len(link) > NOTE_MAX:
        note = note[: NOTE_MAX - len(link) - 1] + "…"
    return note + link


def record_refusal(
    env: Environment,
    t: Treatment,
    criteria: Mapping[str, Any],
    actor: str,
    external_id: str,
    status: str,
    error: PostierError,
) -> dict[str, Any]:
    """Record a run refused at its start, before selecting anything, with its report (the
    reason in French): it shows in Postier's « Exécutions » page like any other run."""
    started = datetime.now(PARIS)
    recorded = {str(k)[:40]: _recordable(v) for k, v in criteria.items()}
    with env.connect() as conn:
        run_id, folder = open_run(env, conn, t.id.value, external_id, recorded, actor)
        report: dict[str, Any] = {
            "execution": run_id,
            "traitement": t.id.value,
            "libelle": t.label,
            "mode": str(recorded.get("mode") or "imprimer"),
            "statut": RUN_STATUS_LABELS[status]
            if status == "criteres_invalides"
            else CONFIGURATION_FAILED,
            "motif": str(error),
            "lance_par": actor,
            **timing(started),
            "criteres": recorded,
            "compteurs": dict.fromkeys(
                ("selectionnees", "traitees", "ignorees", "refusees", "non_traitees"), 0
            ),
            "anomalies": [],
            "fichiers": [folder.location],
        }
        publish(conn, run_id, folder, report, status, to_markdown)
        conn.commit()
    return _summary(report)


def _recordable(value: Any) -> Any:
    """A criterion as typed, stored in the run's JSON: short values as they are, others shown
    in a few characters (a number of 5,000 digits cannot even be written as JSON)."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int) and value.bit_length() <= 63:
        return value
    if isinstance(value, str) and len(value) <= 64:
        return value
    if isinstance(value, list) and len(value) <= 10:
        return [_recordable(v) for v in value]
    return shown(value)


def _criterion(key: str, value: Any) -> str:
    """A criterion's value in the clerk's words (a refused run's criteria are as typed)."""
    if key == "factures" and isinstance(value, list):  # ids mean nothing: how many were ticked
        return f"{len(value)} facture(s) cochée(s) dans la liste"
    if key == "etats" and isinstance(value, list):
        return ", ".join(
            SEND_STATE_LABELS[SendState(v)]
            if isinstance(v, str) and v in SendState.__members__
            else str(v)
            for v in value
        )
    if isinstance(value, bool):
        return "oui" if value else "non"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def to_markdown(report: dict[str, Any]) -> str:
    """A run's report in Markdown, its lists of invoices taken from `report` (the remarks shown:
    the first MAX_REMARKS)."""
    remarks = report.get("remarques") or []
    return "".join(
        line + "\n"
        for line in markdown_lines(
            report,
            (report["anomalies"], 0, ""),
            (remarks[:MAX_REMARKS], max(0, len(remarks) - MAX_REMARKS), "rapport.json"),
        )
    )


#: A list of invoices as a report's Markdown shows it: the rows shown, how many more are not
#: shown, and where they are.
Shown = tuple[Iterable[dict[str, Any]], int, str]


def markdown_lines(report: dict[str, Any], anomalies: Shown, remarks: Shown) -> Iterator[str]:
    """The lines of a run's report in Markdown, one at a time, each list of invoices gone
    through once (never held): the rows shown, then « … et N autres (where) » when N are not."""
    c = report["compteurs"]
    preview = " — **aperçu**" if report["mode"] == "apercu" else ""
    yield from report_header(report, preview)
    if report.get("motif"):
        yield f"- Motif : **{report['motif']}**"
    yield from [
        "- Critères : "
        + "; ".join(
            f"{PARAM_LABELS.get(k, k)} = {_criterion(k, v)}"
            for k, v in report["criteres"].items()
            if k != "mode"
        ),
        "",
        "| Sélectionnées | Traitées | Ignorées | Refusées | Non traitées |",
        "|---:|---:|---:|---:|---:|",
        f"| {c['selectionnees']} | {c['traitees']} | {c['ignorees']} | {c['refusees']} "
        f"| {c['non_traitees']} |",
        "",
    ]
    rows, hidden, where = anomalies
    yield from markdown_table_lines(
        "Factures non traitées",
        ["Facture", "Statut", "Motif"],
        itertools.chain(
            ([a["facture"], a["statut"], a["motif"]] for a in rows),
            [[f"… et {hidden} autres ({where})", "", ""]] if hidden > 0 else [],
        ),
    )
    rows, hidden, where = remarks
    yield from markdown_table_lines(
        "Remarques",
        ["Facture", "Remarque"],
        itertools.chain(
            ([r["facture"], r["remarque"]] for r in rows),
            [[f"… et {hidden} autres ({where})", ""]] if hidden > 0 else [],
        ),
    )
    lines: list[str] = []
    if "courriels" in report:
        m = report["courriels"]
        lines += [
            "## Courriels aux clients",
            "",
            "| Remis au serveur SMTP | Écrits dans la boîte d'envoi locale | En attente "
            "| Incertains | Refusés | Rattrapés (exécutions précédentes) |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {m.get('remis_smtp', 0)} | {m.get('boite_locale', 0)} | {m['en_attente']} "
            f"| {m.get('incertains', 0)} | {m['en_erreur']} | {m['rattrapes']} |",
            "",
        ]
        lines += [f"- {a['client']} : {a['statut']} — {a['motif']}" for a in m["anomalies"]]
        lines += [""] if m["anomalies"] else []
    if "plateforme" in report:
        p = report["plateforme"]
        lines += [
            "## Plateforme agréée",
            "",
            f"{p['deposees']} facture(s) déposée(s), {len(p['refusees'])} refusée(s), "
            f"{len(p['en_attente'])} en attente (déposées par le prochain envoi).",
            "",
        ]
        lines += [f"- {r['facture']} refusée : {r['motif']}" for r in p["refusees"]]
        lines += [f"- {n} en attente de dépôt" for n in p["en_attente"]]
        lines += [""] if p["refusees"] or p["en_attente"] else []
    lines += ["## Fichiers produits", ""] + [f"- `{f}`" for f in report["fichiers"]]
    yield from lines


#: The spec's confirmation message, word for word.
SEND_WARNING = (
    "Attention, l'envoi de la facture au destinataire est définitif. Il ne sera plus possible de "
    "modifier la facture après envoi. Souhaitez-vous poursuivre ?"
)

CHANNEL_LABELS = {
    "portail": "portail (courriel)",
    "chorus": "Chorus Pro",
    "papier": "papier",
    "plateforme": "plateforme agréée",
}


#: The invoices named one by one in the confirmation; the others are counted.
CONFIRMATION_LISTED = 50
NOTHING_TO_SEND = "rien à envoyer : aucune facture « Prêt » ne correspond aux critères"


def send_confirmation(env: Environment, ref: RunRef) -> str | None:
    """What will be sent (count, total, customers, per channel, then the invoices themselves:
    number and customer, the first 50), then the spec's warning; None when nothing is to send
    (no confirmation is asked then)."""
    from postier.domain.money import format_amount

    with env.connect() as conn:
        run_id = resolve_run_id(conn, ref)
        rows = conn.execute(
            "SELECT c.channel, count(*), count(DISTINCT c.id), coalesce(sum(i.total_gross), 0) "
            "FROM run_items r JOIN invoices i ON i.id = r.invoice_id "
            "JOIN customers c ON c.id = i.customer_id "
            "WHERE r.run_id = %s GROUP BY c.channel ORDER BY c.channel",
            (run_id,),
        ).fetchall()
        customers = conn.execute(
            "SELECT count(DISTINCT i.customer_id) FROM run_items r "
            "JOIN invoices i ON i.id = r.invoice_id WHERE r.run_id = %s",
            (run_id,),
        ).fetchone()
        listed = conn.execute(
            "SELECT i.number, c.code, c.name, i.total_gross FROM run_items r "
            "JOIN invoices i ON i.id = r.invoice_id JOIN customers c ON c.id = i.customer_id "
            "WHERE r.run_id = %s ORDER BY r.position LIMIT %s",
            (run_id, CONFIRMATION_LISTED),
        ).fetchall()
    count = sum(r[1] for r in rows)
    if count == 0:
        return None
    total = sum((r[3] for r in rows), start=Decimal(0))
    lines = [
        f"**{count} facture(s)** pour **{customers[0] if customers else 0} client(s)**, "
        f"total TTC **{format_amount(total)}**.",
        "",
        "| Canal | Factures | Clients | Total TTC |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {CHANNEL_LABELS.get(ch, ch)} | {n} | {nc} | {format_amount(amount)} |"
        for ch, n, nc, amount in rows
    ]
    lines += ["", "| Facture | Client | Total TTC |", "|---|---|---:|"]
    lines += [
        f"| {markdown_cell(number)} | {markdown_cell(code)} {markdown_cell(name)} "
        f"| {format_amount(amount)} |"
        for number, code, name, amount in listed
    ]
    if count > len(listed):
        lines.append(f"| … et {count - len(listed)} autres | | |")
    return "\n".join(lines + ["", SEND_WARNING])
