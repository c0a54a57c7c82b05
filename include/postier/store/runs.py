"""Treatment runs and their items: what a run selected, chunk by chunk, and what became of it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from postier.domain.selection import Selection
from postier.store.selection import where_clause

#: Item statuses (French: they appear in reports).
PENDING, DONE, SKIPPED, FAILED = "a_traiter", "traitee", "ignoree", "en_erreur"

#: Airflow's default `max_map_length`: a run never maps more chunks than this.
MAX_CHUNKS = 1024


#: What a mapped task costs outside its own work (queue wait, task process start-up, executor
#: slot release), in seconds: the « surcoût par tâche mappée » of `make bench` (real Airflow).
#: `POSTIER_TASK_OVERHEAD_SECONDS` sets it from a measure on the production machines.
TASK_OVERHEAD_S = 2.5
#: The work per invoice of a chunk, in seconds (document step: render + Factur-X + signature).
INVOICE_S = 0.03
#: Largest share of a chunk's time its task overhead may take.
OVERHEAD_SHARE = 0.05
#: At most this many rounds of chunks per worker (they even out unequal chunks).
MAX_ROUNDS = 4


def task_overhead_s() -> float:
    value = os.environ.get("POSTIER_TASK_OVERHEAD_SECONDS", "")
    try:
        return max(0.0, float(value)) if value else TASK_OVERHEAD_S
    except ValueError:
        return TASK_OVERHEAD_S


#: What an invoice line adds to an invoice's expected cost in a chunk, in invoices: a line is
#: ≈ 0.2 ms of render + signature, an invoice ≈ 9 ms whatever its lines (document step ≈ 6.3 ms,
#: plus its database and storage work), measured on the demo invoices (1 to 58 lines).
LINE_COST = 0.02


def chunk_count_for(
    count: int,
    workers: int,
    min_size: int = 100,
    max_size: int = 2000,
    overhead_s: float | None = None,
) -> int:
    """Chunks from the measured cost of a mapped task: as few rounds per worker (1 to
    MAX_ROUNDS) as keep that cost under OVERHEAD_SHARE of a chunk's work. More chunks than
    workers are always a multiple of the workers, so that no slot idles through a last round
    another slot runs alone; a run too small for `min_size` invoices a worker has one chunk per
    started `min_size`, in one round. Never over MAX_CHUNKS."""
    if count <= 0:
        return 0
    workers = max(1, workers)
    if count < workers * min_size:
        return min(workers, math.ceil(count / min_size))
    overhead = task_overhead_s() if overhead_s is None else overhead_s
    # A chunk at least this big keeps its task's overhead under OVERHEAD_SHARE of its work.
    worth_it = math.ceil(overhead / (INVOICE_S * OVERHEAD_SHARE))
    rounds = max(1, min(MAX_ROUNDS, count // (workers * max(1, worth_it))))
    rounds = max(rounds, math.ceil(count / (workers * max_size)))
    limit = MAX_CHUNKS - MAX_CHUNKS % workers if workers <= MAX_CHUNKS else MAX_CHUNKS
    return min(workers * rounds, limit)


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

    Chunks follow the selection order (chunk 0 first) and share its expected cost evenly: an
    invoice costs 1 + LINE_COST per line, and goes to the chunk its cost's midpoint falls in,
    so chunks end together rather than one slot finishing a long chunk alone."""
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
        chunks = chunk_count_for(count, workers)
        conn.execute(
            sql.SQL(
                "INSERT INTO run_items (run_id, invoice_id, position, chunk) "
                "SELECT %(run_id)s, id, rn, least(%(chunks)s - 1,"
                " floor((before + cost / 2) * %(chunks)s / total))::int FROM ("
                " SELECT id, rn, cost, sum(cost) OVER (ORDER BY rn) - cost AS before,"
                "  sum(cost) OVER () AS total FROM ("
                "  SELECT i.id, row_number() OVER (ORDER BY i.number) AS rn,"
                "   1 + %(line_cost)s * (SELECT count(*) FROM invoice_lines l"
                "    WHERE l.invoice_id = i.id) AS cost"
                "  FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE {}) s) t"
            ).format(where),
            params | {"run_id": run_id, "chunks": chunks, "line_cost": LINE_COST},
        )
        size = math.ceil(count / chunks) if chunks else None
        conn.execute("UPDATE runs SET chunk_size = %s WHERE id = %s", (size, run_id))
    return count, chunks


def pending_ids(conn: psycopg.Connection, run_id: int, chunk: int) -> list[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM run_items WHERE run_id = %s AND chunk = %s AND status = %s "
        "ORDER BY position",
        (run_id, chunk, PENDING),
    ).fetchall()
    return [r[0] for r in rows]


def record_outcomes(conn: psycopg.Connection, run_id: int, outcomes: Iterable[ItemOutcome]) -> None:
    """Record item outcomes; call inside the chunk's transaction so they commit with its effects."""
    rows = list(outcomes)
    if not rows:
        return
    conn.execute(
        "UPDATE run_items r SET status = u.status, reason = u.reason, output = u.output, "
        "done_at = now() FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) "
        "AS u(invoice_id, status, reason, output) "
        "WHERE r.run_id = %s AND r.invoice_id = u.invoice_id",
        (
            [o.invoice_id for o in rows],
            [o.status for o in rows],
            [o.reason for o in rows],
            [o.output for o in rows],
            run_id,
        ),
    )


def item_counts(conn: psycopg.Connection, run_id: int) -> dict[str, int]:
    counts = {PENDING: 0, DONE: 0, SKIPPED: 0, FAILED: 0}
    for status, n in conn.execute(
        "SELECT status, count(*) FROM run_items WHERE run_id = %s GROUP BY status", (run_id,)
    ):
        counts[status] = n
    return counts


def problems(conn: psycopg.Connection, run_id: int) -> list[dict[str, str]]:
    """Skipped and failed invoices with their French reason, in selection order."""
    rows = conn.execute(
        "SELECT i.number, r.status, r.reason FROM run_items r "
        "JOIN invoices i ON i.id = r.invoice_id "
        "WHERE r.run_id = %s AND r.status IN (%s, %s) ORDER BY r.position",
        (run_id, SKIPPED, FAILED),
    ).fetchall()
    return [{"facture": n, "statut": s, "motif": reason or ""} for n, s, reason in rows]


def remarks(conn: psycopg.Connection, run_id: int) -> list[dict[str, str]]:
    """Processed invoices that carry a note for the clerk (e.g. a 0 € invoice), in order."""
    rows = conn.execute(
        "SELECT i.number, r.reason FROM run_items r JOIN invoices i ON i.id = r.invoice_id "
        "WHERE r.run_id = %s AND r.status = %s AND r.reason IS NOT NULL ORDER BY r.position",
        (run_id, DONE),
    ).fetchall()
    return [{"facture": n, "remarque": reason} for n, reason in rows]


def run_ids_in_order(conn: psycopg.Connection, run_id: int, status: str = DONE) -> Sequence[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM run_items WHERE run_id = %s AND status = %s ORDER BY position",
        (run_id, status),
    ).fetchall()
    return [r[0] for r in rows]


def finish_run(
    conn: psycopg.Connection, run_id: int, status: str, counts: dict[str, Any], report: dict
) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE runs SET status = %s, counts = %s, report = %s, finished_at = now() "
            "WHERE id = %s",
            (status, Jsonb(counts), Jsonb(report), run_id),
        )
