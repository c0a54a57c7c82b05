"""State changes: allowed and refused transitions, stamps, log, concurrency, immutability."""

from __future__ import annotations

import threading

import psycopg
import pytest
from builders import insert_invoice

from postier.domain.treatments import HOLD, KEEP_INTERNAL, PREPARE, REQUEUE, SEND, Transition
from postier.store.transitions import (
    apply_transition,
    lock_for_transition,
    stamp_edited,
    stamp_transition,
)


def state_of(conn: psycopg.Connection, invoice_id: int) -> tuple:
    row = conn.execute(
        "SELECT send_state, state_changed_by, sent_at, sent_by FROM invoices WHERE id = %s",
        (invoice_id,),
    ).fetchone()
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("transition", "start", "end"),
    [
        (PREPARE, "EN_ATTENTE", "PRET"),
        (HOLD, "PRET", "EN_ATTENTE"),
        (KEEP_INTERNAL, "EN_ATTENTE", "CONSERVE_INTERNE"),
        (KEEP_INTERNAL, "PRET", "CONSERVE_INTERNE"),
        (REQUEUE, "CONSERVE_INTERNE", "EN_ATTENTE"),
        (SEND, "PRET", "ENVOYE"),
    ],
)
def test_allowed_transition_changes_state_stamps_and_logs(
    conn: psycopg.Connection, transition: Transition, start: str, end: str
) -> None:
    invoice = insert_invoice(conn, send_state=start)
    conn.commit()
    outcome = apply_transition(conn, [invoice], transition, "jmartin", run_id=None)
    assert len(outcome.changed) == 1 and outcome.skipped == ()
    state, changed_by, sent_at, sent_by = state_of(conn, invoice)
    assert (state, changed_by) == (end, "jmartin")
    assert (sent_at is not None, sent_by) == (
        (True, "jmartin") if end == "ENVOYE" else (False, None)
    )
    log = conn.execute(
        "SELECT kind, status, by, report->>'vers' FROM exchanges WHERE invoice_id = %s", (invoice,)
    ).fetchall()
    assert log == [("changement_etat", end, "jmartin", end)]


@pytest.mark.parametrize(
    ("transition", "start"),
    [
        (PREPARE, "PRET"),
        (PREPARE, "ENVOYE"),
        (HOLD, "EN_ATTENTE"),
        (HOLD, "ENVOYE"),
        (KEEP_INTERNAL, "ENVOYE"),
        (REQUEUE, "PRET"),
        (SEND, "EN_ATTENTE"),
        (SEND, "CONSERVE_INTERNE"),
    ],
)
def test_refused_transition_changes_nothing_and_says_why(
    conn: psycopg.Connection, transition: Transition, start: str
) -> None:
    invoice = insert_invoice(conn, send_state=start)
    conn.commit()
    outcome = apply_transition(conn, [invoice], transition, "jmartin")
    assert outcome.changed == ()
    (skip,) = outcome.skipped
    assert skip.reason.startswith(("état changé depuis la sélection", "déjà"))
    assert state_of(conn, invoice)[0] == start
    count = conn.execute("SELECT count(*) FROM exchanges").fetchone()
    assert count is not None and count[0] == 0


def test_retry_of_a_done_chunk_changes_nothing_and_reports_already_done(
    conn: psycopg.Connection,
) -> None:
    ids = [insert_invoice(conn, send_state="PRET") for _ in range(3)]
    conn.commit()
    first = apply_transition(conn, ids, SEND, "jmartin")
    second = apply_transition(conn, ids, SEND, "autre")
    assert len(first.changed) == 3
    assert second.changed == () and {s.reason for s in second.skipped} == {"déjà envoyée"}
    stamps = conn.execute("SELECT DISTINCT sent_by FROM invoices").fetchall()
    assert stamps == [("jmartin",)]


@pytest.mark.parametrize(
    ("transition", "start", "given"),
    [
        (PREPARE, "EN_ATTENTE", {"fingerprints": ["f1", "f2"]}),
        (SEND, "PRET", {"channels": ["portail", None]}),
        (SEND, "PRET", {"channels": ["portail", None, "chorus", "portail"]}),
    ],
)
def test_values_out_of_step_with_the_invoices_are_refused_and_change_nothing(
    conn: psycopg.Connection, transition: Transition, start: str, given: dict
) -> None:
    ids = [insert_invoice(conn, send_state=start) for _ in range(3)]
    conn.commit()
    with pytest.raises(ValueError), conn.transaction():
        locked = lock_for_transition(conn, ids, transition)
        stamp_transition(conn, locked.ids, transition, "jmartin", **given)
    rows = conn.execute(
        "SELECT send_state, fingerprint, dematerialized FROM invoices ORDER BY id"
    ).fetchall()
    assert rows == [(start, None, False)] * 3
    count = conn.execute("SELECT count(*) FROM exchanges").fetchone()
    assert count is not None and count[0] == 0


def test_unknown_invoice_is_reported_not_fatal(conn: psycopg.Connection) -> None:
    invoice = insert_invoice(conn)
    conn.commit()
    outcome = apply_transition(conn, [invoice, 999_999], PREPARE, "jmartin")
    assert len(outcome.changed) == 1
    assert [s.reason for s in outcome.skipped] == ["facture introuvable"]


def test_concurrent_runs_never_take_the_same_invoice(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as setup:
        ids = [insert_invoice(setup, send_state="PRET") for _ in range(40)]
    results: dict[str, tuple] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        with psycopg.connect(db_dsn) as conn:
            barrier.wait()
            results[name] = apply_transition(conn, ids, SEND, name).changed

    threads = [threading.Thread(target=run, args=(n,)) for n in ("run_a", "run_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = set(results["run_a"]), set(results["run_b"])
    assert not (a & b)
    assert len(a | b) == 40
    with psycopg.connect(db_dsn) as conn:
        logs = conn.execute("SELECT count(*), count(DISTINCT invoice_id) FROM exchanges").fetchone()
    assert logs == (40, 40)


def test_invoice_locked_by_another_run_is_skipped_with_reason(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as setup:
        held, free = (
            insert_invoice(setup, send_state="PRET"),
            insert_invoice(setup, send_state="PRET"),
        )
    with psycopg.connect(db_dsn) as other, psycopg.connect(db_dsn) as conn:
        with other.transaction():
            lock_for_transition(other, [held], SEND)  # the other run holds `held`
            outcome = apply_transition(conn, [held, free], SEND, "jmartin")
        assert len(outcome.changed) == 1
        assert [s.reason for s in outcome.skipped] == [
            "en cours de traitement par une autre exécution"
        ]


def test_print_stamps_edit_date_and_login(conn: psycopg.Connection) -> None:
    invoice = insert_invoice(conn)
    assert stamp_edited(conn, [invoice], "scompta") == 1
    row = conn.execute(
        "SELECT edited_at, edited_by FROM invoices WHERE id = %s", (invoice,)
    ).fetchone()
    assert row is not None and row[0] is not None and row[1] == "scompta"


# -- immutability of sent invoices (database trigger) ------------------------------------------


@pytest.fixture
def sent(conn: psycopg.Connection) -> int:
    invoice = insert_invoice(conn, send_state="PRET", lines=2)
    apply_transition(conn, [invoice], SEND, "jmartin")
    return invoice


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE invoices SET total_net = 1, total_gross = 1 + total_vat WHERE id = %s",
        "UPDATE invoices SET send_state = 'EN_ATTENTE' WHERE id = %s",
        "UPDATE invoices SET sent_by = 'fraude' WHERE id = %s",
        "DELETE FROM invoices WHERE id = %s",
        "UPDATE invoice_lines SET description = 'autre' WHERE invoice_id = %s",
        "DELETE FROM invoice_lines WHERE invoice_id = %s",
        "INSERT INTO invoice_lines (invoice_id, position, description, quantity, unit_price, "
        "vat_rate, net_amount) VALUES (%s, 9, 'ajout', 1, 1, 20, 1)",
        "INSERT INTO invoice_due_dates (invoice_id, position, due_date, amount) "
        "VALUES (%s, 1, '2027-01-01', 1)",
    ],
)
def test_sent_invoice_content_is_immutable(
    conn: psycopg.Connection, sent: int, statement: str
) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="a été envoyée au destinataire"):
        with conn.transaction():
            conn.execute(statement, (sent,))


def test_sent_invoice_still_accepts_reprint_and_chorus_tracking(
    conn: psycopg.Connection, sent: int
) -> None:
    conn.execute(
        "UPDATE invoices SET edited_at = now(), edited_by = 'scompta', chorus_status = '03', "
        "chorus_status_at = now(), dematerialized = true, dematerialized_channel = 'chorus' "
        "WHERE id = %s",
        (sent,),
    )
    row = conn.execute(
        "SELECT chorus_status, edited_by FROM invoices WHERE id = %s", (sent,)
    ).fetchone()
    assert row == ("03", "scompta")


def test_unsent_invoice_stays_editable(conn: psycopg.Connection) -> None:
    invoice = insert_invoice(conn, send_state="PRET")
    conn.execute(
        "UPDATE invoice_lines SET description = 'corrigée' WHERE invoice_id = %s", (invoice,)
    )
    conn.execute("DELETE FROM invoices WHERE id = %s", (invoice,))
    assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)
