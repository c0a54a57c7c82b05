"""Run lifecycle shared by every treatment: start, process one chunk, finalize, report."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg

from postier.domain.models import Invoice, Seller
from postier.domain.selection import PARIS, Selection, shown
from postier.domain.treatments import Treatment, TreatmentId, treatment
from postier.errors import ConfigurationError, PostierError, SelectionError, SigningError
from postier.pipeline.context import Environment
from postier.storage import RunFolder, Storage
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
    #: The run's folder in the storage (`runs.output_dir` holds its location).
    folder: RunFolder

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
    """Validate the criteria and the configuration, record the run, snapshot its selection.

    Returns a small summary for the next tasks (run id, count, chunk numbers, chunk tasks' parts).
    Invalid criteria (`SelectionError`) or a configuration that stops the treatment
    (`ConfigurationError`, `SigningError`) are definitive: the run is recorded as refused, with
    its report, and the error (French) is raised for the caller to fail at once.
    """
    from postier.pipeline.readiness import check_configuration
    from postier.pipeline.reports import record_refusal

    t = treatment(treatment_id)
    try:
        selection, mode = _validated(t, params)
    except SelectionError as error:
        record_refusal(env, t, params, actor, external_id, INVALID_CRITERIA, error)
        raise
    with env.connect() as conn:
        settings = load_settings(conn)
        if t.scheduled:
            days = settings.days_before_send
            selection = selection.created_in_last_days(days, today or datetime.now(PARIS).date())
        recorded = selection.as_params() | {"mode": mode}
        try:
            check_configuration(env, conn, settings, t, selection)
        except (ConfigurationError, SigningError) as error:
            record_refusal(env, t, recorded, actor, external_id, "en_erreur", error)
            raise
        run_id, _ = open_run(env, conn, t.id.value, external_id, recorded, actor)
        count, chunks = run_store.plan_items(conn, run_id, selection, env.workers)
        conn.commit()
    # The chunk tasks the DAG maps: one per worker slot (`chunk_task_count`, the same
    # POSTIER_WORKERS), whatever the chunks; those without a chunk of their own end at once.
    parts = max(1, env.workers)
    log.info(
        "Traitement %s : %d facture(s) sélectionnée(s) en %d paquet(s), %d tâche(s) de paquets",
        t.label,
        count,
        chunks,
        parts,
    )
    return {
        "run_id": run_id,
        "selected": count,
        "chunks": list(range(chunks)),
        # One chunk task per worker slot (`process_part`), each told its part and their number.
        "parts": [{"part": part, "parts": parts} for part in range(parts)],
    }


#: The second half of the two-int4 advisory key of a run's start (`ensure_started`); the chunk
#: claims use the chunk's number there, never negative.
START_LOCK = -1


def ensure_started(
    env: Environment,
    treatment_id: str,
    params: Mapping[str, Any],
    actor: str,
    external_id: str,
) -> bool:
    """Start the run of `external_id` once, whichever of its tasks gets here first (`start_run`),
    under a lock on its identity: the others wait for it, then find the run started. The chunk
    tasks and the send's confirmation call it first (the other tasks of a run never start it),
    and their retries and a « Clear » too: a run already started is not selected again. A run
    refused at its start raises its reason again (`RefusedAtStartError`), without recording
    anything more; any other error of `start_run` as it raised it. True when this call selected."""
    from postier.pipeline.reports import refusal

    with env.connect() as conn:
        # A transaction's lock, held while `start_run` selects and commits on connections of its
        # own: released when this transaction ends with the `with` (commit or rollback, whatever
        # was raised), or at once when this task dies. The run is read by a statement of its
        # own after it: a fresh snapshot, which sees the run another task started meanwhile.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (external_id, START_LOCK))
        row = conn.execute(
            # Without its lists of invoices: only a refusal's reason and counts are read.
            f"SELECT {run_store.REPORT_HEAD} FROM runs WHERE external_id = %s",
            (external_id,),
        ).fetchone()
        if row is None:
            start_run(env, treatment_id, params, actor, external_id)
            return True
        if (refused := refusal(row[0])) is not None:
            raise refused
        return False


def open_run(
    env: Environment,
    conn: psycopg.Connection,
    treatment_id: str,
    external_id: str,
    criteria: dict[str, Any],
    actor: str,
) -> tuple[int, RunFolder]:
    """Create the run (the same one again on a retry with the same external id) and its folder
    in the run storage, recorded as its `output_dir`; the caller commits."""
    run_id = run_store.create_run(conn, treatment_id, external_id, criteria, actor)
    folder = env.run_folder(run_id, treatment_id)
    conn.execute("UPDATE runs SET output_dir = %s WHERE id = %s", (folder.location, run_id))
    return run_id, folder


#: Status of a run refused before selecting anything because its criteria are invalid.
INVALID_CRITERIA = "criteres_invalides"


def _validated(t: Treatment, params: Mapping[str, Any]) -> tuple[Selection, str]:
    criteria = dict(params)
    mode = criteria.pop("mode", "imprimer") or "imprimer"
    if mode not in PRINT_MODES or (mode == "apercu" and t.id is not TreatmentId.IMPRIMER):
        raise SelectionError([f"mode {shown(mode)} inconnu (possibles : imprimer, apercu)"])
    return Selection.from_params(t.id, criteria), str(mode)


#: A run is named by its id, or by the external id of the Airflow run that created it.
RunRef = int | str


def resolve_run_id(conn: psycopg.Connection, ref: RunRef) -> int:
    if isinstance(ref, int):
        return ref
    row = conn.execute("SELECT id FROM runs WHERE external_id = %s", (ref,)).fetchone()
    if row is None:
        raise LookupError(f"aucune exécution enregistrée pour {ref}")
    return int(row[0])


def load_run(conn: psycopg.Connection, ref: RunRef, storage: Storage) -> Run:
    run_id = resolve_run_id(conn, ref)
    row = conn.execute(
        "SELECT treatment, criteria, triggered_by, output_dir FROM runs WHERE id = %s", (run_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"exécution {run_id} introuvable")
    return Run(run_id, treatment(row[0]), row[1], row[2], storage.folder(row[3]))


class _Counted(threading.local):
    """Seconds of one clock spent in blocks (`counting`) on each thread since the last `take`."""

    seconds = 0.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        started = self._clock()
        try:
            yield
        finally:
            self.seconds += self._clock() - started

    def take(self) -> float:
        """The seconds counted on this thread since the last call, and start again from 0."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _blocked_s() -> float:
    """A clock of the seconds this thread spent blocked (neither on a core nor waiting for
    one): the wall time less its CPU (`time.thread_time`) and its run-queue wait
    (`_run_queue_s`). Over a block, its share of the thread's waits apart from the wait for a
    core, which the chunk's line counts whole: a sync or a commit timed on the wall clock
    counted again their CPU and the core they waited for once woken."""
    return time.perf_counter() - time.thread_time() - _run_queue_s()


#: The CPU seconds of the document step (render + sign) on each thread, since the chunk began.
_document_cpu = _Counted(time.thread_time)
#: The seconds a chunk's thread spent blocked making its files durable (`files_sync`).
_sync_wait = _Counted(_blocked_s)


def document_step() -> contextlib.AbstractContextManager[None]:
    """Count the CPU time of the block (a document's render + sign) in the chunk's log line:
    `time.thread_time`, the CPU of this thread only (a chunk's work runs on a thread of its own,
    `postier.airflow.fresh_thread`), so the bench compares its one-core baseline with the
    document step where it really runs."""
    return _document_cpu.counting()


def facturx_first(
    invoices: Iterable[Invoice], seller: Seller, outcomes: list[run_store.ItemOutcome]
) -> dict[int, bytes]:
    """The checked Factur-X XML of a chunk's invoices, by id, made in one pass before their
    renders (`render_final_invoice(..., xml=)`): run between two renders, whose fonts and
    streams evict the CPU's caches, building and checking it cost about twice as much. An
    invoice whose XML is refused gets its failed outcome (the document error names the invoice
    and the field) and no XML. Counted in the document step."""
    from postier.documents import checked_facturx_xml

    made: dict[int, bytes] = {}
    with document_step():
        for invoice in invoices:
            try:
                made[invoice.id] = checked_facturx_xml(invoice, seller)
            except PostierError as error:
                outcomes.append(run_store.ItemOutcome(invoice.id, run_store.FAILED, str(error)))
    return made


def files_sync() -> contextlib.AbstractContextManager[None]:
    """Count the time the thread is blocked in the block (a chunk's files made durable before
    its rows commit: the GED's last batch of up to 15 files written, then its `syncfs`) in the
    chunk's log line, apart from its statements and its commit; its CPU and its wait for a core
    are counted with the chunk's."""
    return _sync_wait.counting()


def _run_queue_s() -> float:
    """Seconds this thread spent runnable but waiting for a core (the kernel's schedstat),
    0 where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


#: A chunk handler processes the pending invoices of a chunk and records their outcomes.
ChunkHandler = Callable[[Environment, psycopg.Connection, Run, list[int]], None]


class Progress:
    """How far a run is, for its chunks' log line: the invoices of its chunks that hold none
    left to process, out of all. The run's items are counted once per task (at its first
    chunk); after that only the chunks not yet seen done are probed, an index look-up each:
    counting the whole run after every chunk made a large run's counting quadratic (30,000
    items counted after each of 270 chunks)."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self._sizes: dict[int, int] | None = None
        self._open: set[int] = set()

    def after_chunk(self, conn: psycopg.Connection) -> tuple[int, int]:
        """(invoices of the chunks done, invoices of the run), read on `conn`."""
        if self._sizes is None:
            chunks = run_store.chunk_sizes(conn, self.run_id)
            self._sizes = {chunk: size for chunk, (size, _) in chunks.items()}
            self._open = {chunk for chunk, (_, pending) in chunks.items() if pending}
        else:
            self._open = run_store.still_pending(conn, self.run_id, sorted(self._open))
        total = sum(self._sizes.values())
        return total - sum(self._sizes[chunk] for chunk in self._open), total


#: A chunk's log line: its invoices, its time, the CPU of its document step (`document_step`),
#: the run's progress, then where its time went: its thread's CPU, and the rest, its waits —
#: for a core (runnable, the others' work running, whenever), then blocked: in its files' sync
#: (`files_sync`), in its commit (PostgreSQL's WAL flush) and elsewhere (its statements'
#: answers, mostly). Each second counted once: the four waits add up to the waits
#: (`bench/airflow_bench.py` reads it).
CHUNK_LOG = (
    "Paquet %d : %d facture(s) traitée(s) en %.2f s, dont documents %.2f s de CPU "
    "— avancement %d/%d ; CPU du paquet %.3f s, attentes %.3f s : d'un cœur %.3f s, "
    "mise en sûreté des fichiers %.3f s, validation %.3f s, requêtes et autres %.3f s"
)


def process_chunk(
    env: Environment, ref: RunRef, chunk: int, progress: Progress | None = None
) -> None:
    """Process the invoices of one chunk still to do; `progress` carried from chunk to chunk."""
    with env.connect() as conn:
        run = load_run(conn, ref, env.storage)
        _process_chunk(env, conn, run, chunk, progress or Progress(run.id))


def _process_chunk(
    env: Environment, conn: psycopg.Connection, run: Run, chunk: int, progress: Progress
) -> None:
    """`process_chunk` on an open connection, which it leaves with no transaction open."""
    from postier.pipeline.handlers import CHUNK_HANDLERS

    started, cpu, queued = time.perf_counter(), time.thread_time(), _run_queue_s()
    _document_cpu.take()
    _sync_wait.take()
    ids = run_store.pending_ids(conn, run.id, chunk)
    if ids:
        CHUNK_HANDLERS[run.treatment.id](env, conn, run, ids)
    # Read in the chunk's own transaction (its items already done there), committed with it:
    # no transaction of its own, two round trips fewer per chunk.
    done, total = progress.after_chunk(conn)
    committing = _blocked_s()
    conn.commit()
    # Its three clocks are read one after the other: a few microseconds below 0 is 0.
    commit = max(0.0, _blocked_s() - committing)
    ended = time.perf_counter()
    wall, cpu = ended - started, time.thread_time() - cpu
    waits = max(0.0, wall - cpu)
    queued, sync = _run_queue_s() - queued, max(0.0, _sync_wait.take())
    log.info(
        CHUNK_LOG,
        chunk,
        len(ids),
        wall,
        _document_cpu.take(),
        done,
        total,
        cpu,
        waits,
        queued,
        sync,
        commit,
        max(0.0, waits - queued - sync - commit),
    )


def share_order(chunks: Sequence[int], part: int, parts: int) -> list[int]:
    """The order in which the task of `part` (of `parts`) tries the chunks: its own share first
    (chunks part, part + parts, …), then the others' from the last: a task that has finished
    its share takes up the chunks the others would reach last, so they meet in the middle
    rather than both trying the same next chunk."""
    own = [c for c in chunks if c % parts == part]
    return own + [c for c in reversed(chunks) if c % parts != part]


#: How long a chunk task waits, once it has tried every chunk, for a chunk another task still
#: holds (a chunk is seconds of work): past it the task fails (French), to be retried.
HELD_CHUNK_WAIT_S = 600.0


def process_part(env: Environment, ref: RunRef, part: int, parts: int) -> dict[str, int]:
    """One chunk task: process every chunk it can claim, in `share_order`; the run's counts.

    A chunk another task holds is left to it at first, a chunk already done is passed over, so
    the tasks end within a chunk of each other however unequal their chunks, and a task with no
    slot to run in before the others are done finds nothing to do. Then the task waits for the
    chunks still held elsewhere and takes up what their task left: it never ends while a chunk
    of its run is pending in another task's hands, so a retry cannot succeed while the attempt
    it replaces, cut off but still holding a chunk, has not committed it (nor `finaliser`, a
    send's delivery or the report run before it). A chunk that raises keeps its claim (no other
    task takes it up while this one runs) while the task goes on with the other chunks, then the
    task fails with that error: its retry, or a task still running, finds the chunks still to do."""
    started = time.perf_counter()
    done, failed = 0, 0
    # Only the first error is kept (its traceback holds its chunk's data), to fail the task with.
    first_error: Exception | None = None
    # Two connections for the whole task: the claims (no transaction ever open on it), and the
    # chunks' work, one transaction per chunk (a PostgreSQL backend's start-up and first queries
    # cost more than a small chunk's statements).
    with env.connect() as claims, contextlib.ExitStack() as stack:
        claims.autocommit = True
        run = load_run(claims, ref, env.storage)
        progress = Progress(run.id)
        work = stack.enter_context(env.connect())

        def process_claimed(chunk: int) -> None:
            nonlocal work, done, failed, first_error
            try:
                _process_chunk(env, work, run, chunk, progress)
            except Exception as error:
                log.exception("Paquet %d en échec", chunk)
                failed += 1
                first_error = first_error or error
                # Its backend terminated alone: the next chunks on a new one (a PostgreSQL
                # restart ends the claims' connection too, and the task at its next claim).
                if work.broken:
                    work.close()
                    work = stack.enter_context(env.connect())
                else:
                    work.rollback()
                return
            run_store.release_chunk(claims, run.id, chunk)
            done += 1

        for chunk in share_order(run_store.pending_chunks(claims, run.id), part, parts):
            if run_store.claim_chunk(claims, run.id, chunk):
                process_claimed(chunk)
        # The chunks other tasks held: each waited for once (its task commits or dies). Not
        # after a failure: the task then holds its failed chunks, and fails at once.
        waited: set[int] = set()
        while first_error is None:
            held = [c for c in run_store.pending_chunks(claims, run.id) if c not in waited]
            if not held:
                break
            waited.add(held[0])
            try:
                claimed = run_store.wait_for_chunk(claims, run.id, held[0], HELD_CHUNK_WAIT_S)
            except psycopg.errors.LockNotAvailable:
                raise PostierError(
                    f"paquet {held[0]} toujours tenu par une autre tâche après "
                    f"{HELD_CHUNK_WAIT_S:.0f} s (tâche bloquée ou hôte injoignable) : ses "
                    "factures restent à traiter, la tâche sera relancée"
                ) from None
            if claimed:
                process_claimed(held[0])
        counts = run_store.item_counts(claims, run.id)
    log.info(
        "Part %d/%d : %d paquet(s) traité(s), %d en échec, en %.2f s",
        part,
        parts,
        done,
        failed,
        time.perf_counter() - started,
    )
    if first_error is not None:
        raise first_error
    return counts
