"""Treatment runs and their items: what a run selected, chunk by chunk, and what became of it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from postier.domain.selection import Selection
from postier.store.selection import where_clause

#: Item statuses (French: they appear in reports).
PENDING, DONE, SKIPPED, FAILED = "a_traiter", "traitee", "ignoree", "en_erreur"

#: The work of a chunk, in seconds: short enough that the tasks, which take the chunks in turn,
#: end within a chunk of each other; long enough that what a chunk costs besides its invoices
#: stays negligible: measured (its log line's waits, docs/performance-notes.md), ≈ 10 ms of
#: fixed statements and commit (its thread's CPU outside the documents is per invoice, none per
#: chunk), 1–10 ms of GED sync in a send. The ≈ 0.1 s a chunk's wall time shows beyond its CPU
#: on a real Airflow is the other processes' CPU (scheduler, PostgreSQL…) taking its core: a
#: share of its time, not a cost per chunk, which larger chunks would not reduce.
CHUNK_S = 2.0
#: The work per invoice of a chunk, in seconds: document step (render + Factur-X + signature,
#: ≈ 6.8 ms) plus the chunk's own database and storage work, measured on the demo invoices.
INVOICE_S = 0.009
#: What an invoice line adds to an invoice's expected cost in a chunk, in invoices: a line is
#: ≈ 0.2 ms of render + signature, an invoice ≈ 9 ms whatever its lines (document step ≈ 6.3 ms,
#: plus its database and storage work), measured on the demo invoices (1 to 58 lines).
LINE_COST = 0.02
#: Fewest invoices in a chunk, unless the run has fewer or the chunk is one of its small last
#: ones (`chunk_weights`).
MIN_CHUNK = 100
#: Fewest invoices in one of a run's quarter chunks (`chunk_weights`): fewer, and cutting the
#: run by cost could leave one empty. With MIN_CHUNK's 100 a quarter chunk holds 25 or more;
#: this floor matters only where tests lower MIN_CHUNK to cut tiny runs in several chunks.
MIN_QUARTER_CHUNK = 2


def chunk_count_for(count: int, workers: int) -> int:
    """Chunks a run of `count` invoices is cut in: see `chunk_weights`."""
    return len(chunk_weights(count, workers))


def chunk_weights(count: int, workers: int) -> list[float]:
    """The share of a run's expected work each of its chunks gets, chunk 0 first.

    Chunks of about CHUNK_S seconds of work each, in any number: a chunk is the unit of a
    transaction and of progress, not an Airflow task (a run maps one task per worker, and each
    takes chunks until none is left). A run too small to give every worker such a chunk is cut
    in one chunk per started MIN_CHUNK invoices, at most one per worker, alike.

    A run with more chunks than workers (two or more) ends on one chunk of half the size per
    worker, then one of a quarter (guided self-scheduling; `share_order` gives each task one of
    each, last): the tasks then end within a quarter chunk of each other rather than a whole
    one, for one chunk more per worker."""
    if count <= 0:
        return []
    size = max(MIN_CHUNK, round(CHUNK_S / INVOICE_S))
    slots = max(1, workers)
    even = max(math.ceil(count / size), min(slots, math.ceil(count / MIN_CHUNK)))
    if even <= slots or slots == 1:  # every task a chunk of its own, or a single task
        return [1.0] * even
    # Whole chunks of at most `size` invoices before the tail's 0.75 chunk per worker.
    whole = math.ceil(count / size - 0.75 * slots)
    chunk = count / (whole + 0.75 * slots)  # invoices in a whole chunk, once the tail is cut
    if chunk < MIN_CHUNK or chunk / 4 < MIN_QUARTER_CHUNK:
        return [1.0] * even  # no room for a half and a quarter chunk: chunks alike
    return [1.0] * whole + [0.5] * slots + [0.25] * slots


@dataclass(frozen=True)
class ItemOutcome:
    invoice_id: int
    status: str
    reason: str | None = None
    output: str | None = None


def create_run(
    conn: psycopg.Connection,
    treatment: str,
    external_id: str,
    criteria: dict[str, Any],
    triggered_by: str,
) -> int:
    """The run's id; the same id again when a retried task calls it with the same external id."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO runs (treatment, external_id, criteria, triggered_by) "
            "VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (external_id) DO UPDATE SET external_id = EXCLUDED.external_id "
            "RETURNING id",
            (treatment, external_id, Jsonb(criteria), triggered_by),
        ).fetchone()
    assert row is not None
    return int(row[0])


def plan_items(
    conn: psycopg.Connection, run_id: int, selection: Selection, workers: int
) -> tuple[int, int]:
    """Snapshot the selection into `run_items`, chunked; (invoices, chunks). Idempotent.

    Chunks follow the selection order (chunk 0 first) and share its expected cost as
    `chunk_weights` says (evenly, but for the small last chunks): an invoice costs 1 + LINE_COST
    per line, and goes to the chunk its cost's midpoint falls in, so chunks end together rather
    than one slot finishing a long chunk alone."""
    with conn.transaction():
        conn.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,))
        done = conn.execute(
            "SELECT count(*), coalesce(max(chunk) + 1, 0) FROM run_items WHERE run_id = %s",
            (run_id,),
        ).fetchone()
        if done and done[0]:
            return int(done[0]), int(done[1])
        where, params = where_clause(selection)
        count_row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE {}"
            ).format(where),
            params,
        ).fetchone()
        count = int(count_row[0]) if count_row else 0
        weights = chunk_weights(count, workers)
        chunks = len(weights)
        # Each chunk's lower bound, as a share of the run's expected cost.
        starts = [sum(weights[:c]) / sum(weights) for c in range(chunks)]
        conn.execute(
            sql.SQL(
                "INSERT INTO run_items (run_id, invoice_id, position, chunk) "
                "SELECT %(run_id)s, id, rn, least(%(chunks)s,"
                " width_bucket(((before + cost / 2) / total)::float8, %(starts)s::float8[])) - 1"
                " FROM ("
                " SELECT id, rn, cost, sum(cost) OVER (ORDER BY rn) - cost AS before,"
                "  sum(cost) OVER () AS total FROM ("
                "  SELECT i.id, row_number() OVER (ORDER BY i.number) AS rn,"
                "   1 + %(line_cost)s * (SELECT count(*) FROM invoice_lines l"
                "    WHERE l.invoice_id = i.id) AS cost"
                "  FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE {}) s) t"
            ).format(where),
            params | {"run_id": run_id, "chunks": chunks, "starts": starts, "line_cost": LINE_COST},
        )
    return count, chunks


def pending_ids(conn: psycopg.Connection, run_id: int, chunk: int) -> list[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM run_items WHERE run_id = %s AND chunk = %s AND status = %s "
        "ORDER BY position",
        (run_id, chunk, PENDING),
    ).fetchall()
    return [r[0] for r in rows]


def pending_chunks(conn: psycopg.Connection, run_id: int) -> list[int]:
    """The run's chunks that still hold invoices to process, in selection order."""
    rows = conn.execute(
        "SELECT DISTINCT chunk FROM run_items WHERE run_id = %s AND status = %s ORDER BY chunk",
        (run_id, PENDING),
    ).fetchall()
    return [r[0] for r in rows]


def claim_chunk(conn: psycopg.Connection, run_id: int, chunk: int) -> bool:
    """Claim a chunk that still holds invoices to process and that no other task holds, for as
    long as `conn` lives or until `release_chunk`; False when it is held or done.

    A session advisory lock (keyed on run and chunk), not a transaction's: some handlers commit
    several times inside their chunk (Chorus: record the flow, upload, mark it deposited). A
    task killed mid-chunk loses its connection, hence its claims, at once; its chunk's invoices
    are still pending (its transaction never committed) for whichever task comes next."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_lock_key(run_id), chunk)).fetchone()
    if not (row and row[0]):
        return False
    return _kept_if_pending(conn, run_id, chunk)


def wait_for_chunk(conn: psycopg.Connection, run_id: int, chunk: int, timeout_s: float) -> bool:
    """`claim_chunk`, waiting for the task that holds the chunk to let it go (it commits, or dies
    and its connection with it) for at most `timeout_s`; False when it was done meanwhile.
    Raises `psycopg.errors.LockNotAvailable` when still held after `timeout_s`."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout_s * 1000)}ms",))
    try:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_lock_key(run_id), chunk))
    finally:
        conn.execute("RESET lock_timeout")
    return _kept_if_pending(conn, run_id, chunk)


def _kept_if_pending(conn: psycopg.Connection, run_id: int, chunk: int) -> bool:
    # Read after the lock: a task that held it committed before letting go.
    pending = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM run_items WHERE run_id = %s AND chunk = %s AND status = %s)",
        (run_id, chunk, PENDING),
    ).fetchone()
    if pending and pending[0]:
        return True
    release_chunk(conn, run_id, chunk)
    return False


def release_chunk(conn: psycopg.Connection, run_id: int, chunk: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_lock_key(run_id), chunk))


def _lock_key(run_id: int) -> int:
    # The two-int4 advisory key space (the one-bigint space, used by Postier's other locks: mail,
    # PA deposits, lifecycle, Chorus returns, migrations, does not overlap it); run ids wrap only
    # 2^31 runs apart.
    return run_id % 2**31


def record_outcomes(conn: psycopg.Connection, run_id: int, outcomes: Iterable[ItemOutcome]) -> None:
    """Record item outcomes; call inside the chunk's transaction so they commit with its effects."""
    rows = list(outcomes)
    if not rows:
        return
    ids = [o.invoice_id for o in rows]
    # `invoice_id = ANY(ids)` lets the planner find the chunk's rows by the primary key: joined
    # on the unnest alone, it hashed every item of the run for each chunk (4.4 ms against 1.1 ms
    # for 220 outcomes in a run of 20,000; quadratic in the run's size).
    conn.execute(
        "UPDATE run_items r SET status = u.status, reason = u.reason, output = u.output, "
        "done_at = now() FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) "
        "AS u(invoice_id, status, reason, output) "
        "WHERE r.run_id = %s AND r.invoice_id = ANY(%s) AND r.invoice_id = u.invoice_id",
        (
            ids,
            [o.status for o in rows],
            [o.reason for o in rows],
            [o.output for o in rows],
            run_id,
            ids,
        ),
    )


def chunk_sizes(conn: psycopg.Connection, run_id: int) -> dict[int, tuple[int, bool]]:
    """Each chunk of the run: (its invoices, whether some are still to process)."""
    rows = conn.execute(
        "SELECT chunk, count(*), bool_or(status = %s) FROM run_items WHERE run_id = %s "
        "GROUP BY chunk",
        (PENDING, run_id),
    ).fetchall()
    return {int(chunk): (int(n), bool(pending)) for chunk, n, pending in rows}


def still_pending(conn: psycopg.Connection, run_id: int, chunks: Sequence[int]) -> set[int]:
    """Which of `chunks` still hold invoices to process: one index probe per chunk (the first
    pending item found, if any), not a count of the run's items."""
    if not chunks:
        return set()
    rows = conn.execute(
        "SELECT c FROM unnest(%s::int[]) AS c WHERE (SELECT 1 FROM run_items "
        "WHERE run_id = %s AND chunk = c AND status = %s LIMIT 1) IS NOT NULL",
        (list(chunks), run_id, PENDING),
    ).fetchall()
    return {int(r[0]) for r in rows}


def item_counts(conn: psycopg.Connection, run_id: int) -> dict[str, int]:
    counts = {PENDING: 0, DONE: 0, SKIPPED: 0, FAILED: 0}
    for status, n in conn.execute(
        "SELECT status, count(*) FROM run_items WHERE run_id = %s GROUP BY status", (run_id,)
    ):
        counts[status] = n
    return counts


#: A run's written report without its lists of invoices (`REPORT_LISTS`: as long as the
#: run's problems): what the checks of a report already written read (its counts, status,
#: reason, location), not the whole report loaded again in every task that ends a large run.
REPORT_HEAD = "report - 'anomalies' - 'remarques'"


#: The two lists of invoices of a run's written report, built by PostgreSQL from the run's
#: items in selection order (`finish_run_with_lists`): `anomalies`, the skipped and failed
#: invoices with their French reason (each status shown by its label in `%(labels)s`);
#: `remarques`, the processed ones that carry a note for the clerk (e.g. a 0 € invoice).
REPORT_LISTS = (
    "jsonb_build_object("
    " 'anomalies', (SELECT coalesce(jsonb_agg(jsonb_build_object('facture', i.number,"
    "  'statut', %(labels)s::jsonb ->> r.status, 'motif', coalesce(r.reason, ''))"
    "  ORDER BY r.position), '[]'::jsonb) FROM run_items r"
    "  JOIN invoices i ON i.id = r.invoice_id"
    "  WHERE r.run_id = %(run)s AND r.status IN (%(skipped)s, %(failed)s)),"
    " 'remarques', (SELECT coalesce(jsonb_agg(jsonb_build_object('facture', i.number,"
    "  'remarque', r.reason) ORDER BY r.position), '[]'::jsonb) FROM run_items r"
    "  JOIN invoices i ON i.id = r.invoice_id"
    "  WHERE r.run_id = %(run)s AND r.status = %(done)s AND r.reason IS NOT NULL))"
)


def report_list(
    conn: psycopg.Connection,
    run_id: int,
    key: str,
    fields: Sequence[str],
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The elements of the list `key` of the run's written report, in order (the first `limit`
    of them, or all), read from a server-side cursor (a few at a time), each with its `fields`
    in that order."""
    with conn.cursor(name=f"report_{key}") as cur:
        cur.execute(
            "SELECT e FROM runs, jsonb_array_elements(report -> %s) WITH ORDINALITY AS t(e, n) "
            "WHERE id = %s ORDER BY n LIMIT %s",
            (key, run_id, limit),
        )
        for (element,) in cur:
            yield {field: element[field] for field in fields}


def run_ids_in_order(conn: psycopg.Connection, run_id: int, status: str = DONE) -> Sequence[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM run_items WHERE run_id = %s AND status = %s ORDER BY position",
        (run_id, status),
    ).fetchall()
    return [r[0] for r in rows]


#: A run's row closed: its status, counts and written report (`{report}`: how it is written).
FINISH_RUN = (
    "UPDATE runs SET status = %(status)s, counts = %(counts)s, report = {report},"
    " finished_at = now() WHERE id = %(run)s"
)


def finish_run(
    conn: psycopg.Connection, run_id: int, status: str, counts: dict[str, Any], report: dict
) -> None:
    """Close the run's row: its status, counts and written report, in one UPDATE."""
    with conn.transaction():
        conn.execute(
            FINISH_RUN.format(report="%(report)s"), _finished(run_id, status, counts, report)
        )


def finish_run_with_lists(
    conn: psycopg.Connection,
    run_id: int,
    status: str,
    counts: dict[str, Any],
    report: dict,
    labels: dict[str, str],
) -> tuple[int, int]:
    """`finish_run`, the report's two lists of invoices (`REPORT_LISTS`, each status shown by
    its label in `labels`) built by PostgreSQL in the same UPDATE of the row, in place of
    `report`'s: nothing of them goes through Python. Their lengths (anomalies, remarks)."""
    with conn.transaction():
        row = conn.execute(
            FINISH_RUN.format(report=f"%(report)s || {REPORT_LISTS}")
            + " RETURNING jsonb_array_length(report -> 'anomalies'),"
            " jsonb_array_length(report -> 'remarques')",
            {
                **_finished(run_id, status, counts, report),
                "labels": Jsonb(labels),
                "skipped": SKIPPED,
                "failed": FAILED,
                "done": DONE,
            },
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _finished(run_id: int, status: str, counts: dict[str, Any], report: dict) -> dict[str, Any]:
    return {"run": run_id, "status": status, "counts": Jsonb(counts), "report": Jsonb(report)}
