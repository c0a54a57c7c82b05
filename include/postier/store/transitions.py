"""Send-state changes: one transaction per chunk, row locks, stamps and exchange-log rows.

Concurrency argument: rows are locked with `FOR UPDATE SKIP LOCKED` and their state re-read under
the lock. A second run either skips rows another run holds, or sees the state that run committed
and skips them as "already done" / "changed since selection". No invoice is processed twice, and a
retried chunk redoes only the invoices still in a start state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from postier.domain.states import SendState
from postier.domain.treatments import Transition
from postier.store.exchanges import Exchange, record_same_exchange


@dataclass(frozen=True)
class Skip:
    invoice_id: int
    number: str
    reason: str


@dataclass(frozen=True)
class Locked:
    """Invoices locked for a transition (in id order) and those left aside, with the reason."""

    ids: tuple[int, ...]
    numbers: tuple[str, ...]
    skipped: tuple[Skip, ...]
    #: Each locked invoice's stored fingerprint (None before its first preparation), by id:
    #: read with the lock, for the send to compare (no statement of its own).
    fingerprints: dict[int, str | None]


@dataclass(frozen=True)
class TransitionOutcome:
    changed: tuple[str, ...]
    skipped: tuple[Skip, ...]


def lock_for_transition(
    conn: psycopg.Connection, invoice_ids: Sequence[int], transition: Transition
) -> Locked:
    """Lock the invoices still eligible; must run inside the chunk's transaction."""
    wanted = sorted(set(invoice_ids))
    rows = conn.execute(
        "SELECT id, number, send_state, fingerprint FROM invoices WHERE id = ANY(%s) "
        "ORDER BY id FOR UPDATE SKIP LOCKED",
        (wanted,),
    ).fetchall()
    ids: list[int] = []
    numbers: list[str] = []
    skipped: list[Skip] = []
    fingerprints: dict[int, str | None] = {}
    for invoice_id, number, state, fingerprint in rows:
        state = SendState(state)
        if state in transition.from_states:
            ids.append(invoice_id)
            numbers.append(number)
            fingerprints[invoice_id] = fingerprint
        elif state is transition.to_state:
            skipped.append(Skip(invoice_id, number, f"déjà {transition.verb}"))
        else:
            skipped.append(
                Skip(invoice_id, number, f"état changé depuis la sélection : « {state.label} »")
            )
    seen = {r[0] for r in rows}
    missing = [i for i in wanted if i not in seen]
    if missing:
        # A plain read never waits on locks: it names the invoices another run is holding.
        known: dict[int, str] = dict(
            conn.execute(
                "SELECT id, number FROM invoices WHERE id = ANY(%s)", (missing,)
            ).fetchall()
        )
        for invoice_id in missing:
            if invoice_id in known:
                skipped.append(
                    Skip(
                        invoice_id,
                        known[invoice_id],
                        "en cours de traitement par une autre exécution",
                    )
                )
            else:
                skipped.append(Skip(invoice_id, f"#{invoice_id}", "facture introuvable"))
    return Locked(tuple(ids), tuple(numbers), tuple(skipped), fingerprints)


def stamp_transition(
    conn: psycopg.Connection,
    invoice_ids: Sequence[int],
    transition: Transition,
    actor: str,
    run_id: int | None = None,
    *,
    fingerprints: Sequence[str] | None = None,
    channels: Sequence[str | None] | None = None,
) -> None:
    """Move locked invoices to the target state, stamp who/when, log one exchange row each.

    What the chunk also sets on the same invoices comes in the same statement (one new row
    version per invoice, not one per statement): `fingerprints` (a prepare: each invoice's, in
    the order of the ids), `channels` (a send: the channel each id was dematerialised on, None
    for those that were not)."""
    if not invoice_ids:
        return
    ids = list(invoice_ids)
    # unnest would pad a shorter list with NULLs, leaving its last invoices' column unchanged:
    # lists out of step with the ids are the caller's bug, refused before anything changes.
    for name, given in (("fingerprints", fingerprints), ("channels", channels)):
        if given is not None and len(given) != len(ids):
            raise ValueError(f"{len(given)} {name} for {len(ids)} invoices")
    sending = transition.to_state is SendState.ENVOYE
    # unnest pads the arrays not given (NULL) with NULLs: those columns keep their value.
    conn.execute(
        "UPDATE invoices i SET send_state = %(to)s, state_changed_at = now(), "
        "state_changed_by = %(actor)s, "
        "sent_at = CASE WHEN %(sending)s THEN now() ELSE i.sent_at END, "
        "sent_by = CASE WHEN %(sending)s THEN %(actor)s ELSE i.sent_by END, "
        "fingerprint = coalesce(u.print, i.fingerprint), "
        "dematerialized = i.dematerialized OR u.channel IS NOT NULL, "
        "dematerialized_channel = coalesce(u.channel, i.dematerialized_channel) "
        "FROM unnest(%(ids)s::bigint[], %(prints)s::text[], %(channels)s::text[]) "
        "AS u(id, print, channel) WHERE i.id = u.id",
        {
            "to": transition.to_state.value,
            "actor": actor,
            "sending": sending,
            "ids": ids,
            "prints": None if fingerprints is None else list(fingerprints),
            "channels": None if channels is None else list(channels),
        },
    )
    report = {
        "de": sorted(s.value for s in transition.from_states),
        "vers": transition.to_state.value,
        "libelle": f"facture {transition.verb}",
    }
    record_same_exchange(
        conn,
        ids,
        Exchange(
            None, run_id, "changement_etat", "ARTIS", transition.to_state.value, report, actor
        ),
    )


def apply_transition(
    conn: psycopg.Connection,
    invoice_ids: Sequence[int],
    transition: Transition,
    actor: str,
    run_id: int | None = None,
) -> TransitionOutcome:
    """Lock, check and change the state of one chunk of invoices, in one transaction."""
    with conn.transaction():
        locked = lock_for_transition(conn, invoice_ids, transition)
        stamp_transition(conn, locked.ids, transition, actor, run_id)
    return TransitionOutcome(locked.numbers, locked.skipped)


def stamp_edited(conn: psycopg.Connection, invoice_ids: Sequence[int], actor: str) -> int:
    """Record a real print (not a preview): edit date/time and login."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE invoices SET edited_at = now(), edited_by = %s WHERE id = ANY(%s)",
            (actor, list(invoice_ids)),
        )
    return cur.rowcount
