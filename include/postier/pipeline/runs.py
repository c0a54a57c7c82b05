"""Run lifecycle shared by every treatment: start, process one chunk, finalize, report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg

from postier.domain.selection import PARIS, Selection
from postier.domain.treatments import SEND, Treatment, TreatmentId, treatment
from postier.errors import SelectionError
from postier.pipeline.context import Environment
from postier.store import runs as run_store
from postier.store.settings import load_settings

log = logging.getLogger(__name__)

PRINT_MODES = ("imprimer", "apercu")


@dataclass(frozen=True)
class Run:
    """A run as a chunk task sees it, read back from the `runs` table."""

    id: int
    treatment: Treatment
    criteria: dict[str, Any]
    triggered_by: str
    output_dir: Path

    @property
    def mode(self) -> str:
        return str(self.criteria.get("mode", "imprimer"))

    @property
    def preview(self) -> bool:
        return self.mode == "apercu"


def start_run(
    env: Environment,
    treatment_id: str,
    params: Mapping[str, Any],
    actor: str,
    external_id: str,
    today: date | None = None,
) -> dict[str, Any]:
    """Validate the criteria, record the run and snapshot its selection in chunks.

    Returns a small summary for the next tasks (run id, count, chunk numbers). A `SelectionError`
    (French) is raised before anything is read when the criteria are invalid.
    """
    t = treatment(treatment_id)
    criteria = dict(params)
    mode = str(criteria.pop("mode", "imprimer") or "imprimer")
    if mode not in PRINT_MODES or (mode == "apercu" and t.id is not TreatmentId.IMPRIMER):
        raise SelectionError([f"mode « {mode} » inconnu (possibles : imprimer, apercu)"])
    selection = Selection.from_params(t.id, criteria)
    with env.connect() as conn:
        if t.scheduled:
            days = load_settings(conn).days_before_send
            selection = selection.created_in_last_days(days, today or datetime.now(PARIS).date())
        if t.transition is SEND:
            from postier.pipeline.sending import check_send_configuration

            settings = load_settings(conn)
            check_send_configuration(settings)
            env.refuse_demo_fallbacks(
                signing=True, ged=settings.archiving, smtp=settings.demat_artis
            )
        recorded = selection.as_params() | {"mode": mode}
        run_id = run_store.create_run(conn, t.id.value, external_id, recorded, actor)
        output_dir = env.run_dir(run_id, t.id.value)
        conn.execute("UPDATE runs SET output_dir = %s WHERE id = %s", (str(output_dir), run_id))
        count, chunks = run_store.plan_items(conn, run_id, selection, env.workers)
        conn.commit()
    log.info("Traitement %s : %d facture(s) sélectionnée(s) en %d lot(s)", t.label, count, chunks)
    return {"run_id": run_id, "selected": count, "chunks": list(range(chunks))}


#: A run is named by its id, or by the external id of the Airflow run that created it.
RunRef = int | str


def resolve_run_id(conn: psycopg.Connection, ref: RunRef) -> int:
    if isinstance(ref, int):
        return ref
    row = conn.execute("SELECT id FROM runs WHERE external_id = %s", (ref,)).fetchone()
    if row is None:
        raise LookupError(f"aucune exécution enregistrée pour {ref}")
    return int(row[0])


def load_run(conn: psycopg.Connection, ref: RunRef) -> Run:
    run_id = resolve_run_id(conn, ref)
    row = conn.execute(
        "SELECT treatment, criteria, triggered_by, output_dir FROM runs WHERE id = %s", (run_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"exécution {run_id} introuvable")
    return Run(run_id, treatment(row[0]), row[1], row[2], Path(row[3]))


#: A chunk handler processes the pending invoices of a chunk and records their outcomes.
ChunkHandler = Callable[[Environment, psycopg.Connection, Run, list[int]], None]


def process_chunk(env: Environment, ref: RunRef, chunk: int) -> dict[str, int]:
    """Process the invoices of one chunk still to do; counts of the whole run afterwards."""
    from postier.pipeline.handlers import CHUNK_HANDLERS

    started = time.perf_counter()
    with env.connect() as conn:
        run = load_run(conn, ref)
        ids = run_store.pending_ids(conn, run.id, chunk)
        if ids:
            CHUNK_HANDLERS[run.treatment.id](env, conn, run, ids)
        conn.commit()
        counts = run_store.item_counts(conn, run.id)
    log.info(
        "Lot %d : %d facture(s) traitée(s) en %.1f s — avancement %d/%d",
        chunk,
        len(ids),
        time.perf_counter() - started,
        counts[run_store.DONE] + counts[run_store.SKIPPED] + counts[run_store.FAILED],
        sum(counts.values()),
    )
    return counts
