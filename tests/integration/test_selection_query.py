"""Selections run against a real PostgreSQL: each criterion alone, combined, and per treatment."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice

from postier.domain.selection import PARIS, Selection
from postier.store.selection import explain, select_frame, select_ids


def numbers(conn: psycopg.Connection, treatment: str, **params: Any) -> set[str]:
    ids = select_ids(conn, Selection.from_params(treatment, params))
    rows = conn.execute("SELECT number FROM invoices WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def book(conn: psycopg.Connection) -> psycopg.Connection:
    """A small invoice book where each invoice differs from the others by one criterion."""
    edited = datetime(2026, 11, 10, 23, 30, tzinfo=PARIS)  # late evening: a Paris-day edge
    chorus = insert_customer(conn, channel="chorus", code="CHORUS1")
    rows = [
        dict(number="A-LOT10", batch_number=10),
        dict(number="A-LOT20", batch_number=20),
        dict(number="A-OCT", invoice_date=date(2026, 10, 15)),
        dict(number="A-JMARTIN", created_by="jmartin"),
        dict(number="A-EDITED", edited_at=edited, edited_by="scompta"),
        dict(number="A-DEMAT", dematerialized=True, dematerialized_channel="artis"),
        dict(number="A-PRET", send_state="PRET"),
        dict(number="A-ENVOYE", send_state="ENVOYE"),
        dict(number="A-INTERNE", send_state="CONSERVE_INTERNE"),
        dict(number="A-LCR", payment_mode="lcr"),
        dict(number="A-BOR", payment_mode="billet_ordre", send_state="PRET"),
        dict(number="A-CHORUS", customer_id=chorus, send_state="ENVOYE"),
    ]
    for values in rows:
        insert_invoice(conn, **values)
    conn.commit()
    return conn


def test_print_defaults_hide_edited_dematerialised_and_internal_invoices(book) -> None:  # type: ignore[no-untyped-def]
    got = numbers(book, "factures_imprimer")
    assert "A-EDITED" not in got and "A-DEMAT" not in got and "A-INTERNE" not in got
    assert {"A-LOT10", "A-PRET", "A-ENVOYE", "A-CHORUS", "A-LCR"} <= got


def test_print_switches_off_show_everything_in_the_chosen_states(book) -> None:  # type: ignore[no-untyped-def]
    got = numbers(
        book,
        "factures_imprimer",
        sans_date_edition=False,
        sans_dematerialisation=False,
        etats=["EN_ATTENTE", "PRET", "ENVOYE", "CONSERVE_INTERNE"],
    )
    assert len(got) == 12


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"lot_fin": 15}, {"A-LOT10"}),
        ({"lot_debut": 15, "lot_fin": 50}, {"A-LOT20"}),
        ({"lot_debut": 10, "lot_fin": 10}, {"A-LOT10"}),
        ({"date_facture_fin": "2026-10-31"}, {"A-OCT"}),
        ({"operateur_creation": "jmartin"}, {"A-JMARTIN"}),
        ({"operateur_edition": "scompta"}, {"A-EDITED"}),
        ({"date_edition_debut": "2026-11-10", "date_edition_fin": "2026-11-10"}, {"A-EDITED"}),
        ({"date_edition_debut": "2026-11-11"}, set()),
        ({"lot_debut": 100, "operateur_creation": "jmartin"}, {"A-JMARTIN"}),
        ({"lot_debut": 100, "operateur_creation": "jmartin", "etats": ["PRET"]}, set()),
    ],
)
def test_each_criterion_filters_alone_and_combined(book, params, expected) -> None:  # type: ignore[no-untyped-def]
    all_states = ["EN_ATTENTE", "PRET", "ENVOYE", "CONSERVE_INTERNE"]
    base = {"sans_date_edition": False, "sans_dematerialisation": False, "etats": all_states}
    assert numbers(book, "factures_imprimer", **(base | params)) == expected


def test_bills_of_exchange_only_select_lcr_and_promissory_notes(book) -> None:  # type: ignore[no-untyped-def]
    assert numbers(book, "factures_imprimer_traites") == {"A-LCR", "A-BOR"}


@pytest.mark.parametrize(
    ("treatment", "expected_states"),
    [
        ("factures_preparer_envoi", {"EN_ATTENTE"}),
        ("factures_mettre_en_attente", {"PRET"}),
        ("factures_conserver_en_interne", {"EN_ATTENTE", "PRET"}),
        ("factures_remettre_en_attente", {"CONSERVE_INTERNE"}),
        ("factures_envoyer", {"PRET"}),
    ],
)
def test_state_treatments_select_their_default_states(book, treatment, expected_states) -> None:  # type: ignore[no-untyped-def]
    ids = select_ids(book, Selection.defaults(treatment))
    states = {
        r[0] for r in book.execute("SELECT send_state FROM invoices WHERE id = ANY(%s)", (ids,))
    }
    assert states == expected_states
    total = book.execute(
        "SELECT count(*) FROM invoices WHERE send_state = ANY(%s)", (list(expected_states),)
    ).fetchone()
    assert total is not None and len(ids) == total[0]


def test_chorus_collection_takes_only_undeposited_chorus_invoices(book) -> None:  # type: ignore[no-untyped-def]
    assert numbers(book, "factures_chorus_recuperer") == {"A-CHORUS"}
    book.execute("UPDATE invoices SET chorus_deposited_at = now() WHERE number = 'A-CHORUS'")
    assert numbers(book, "factures_chorus_recuperer") == set()


def test_nightly_send_takes_only_recent_ready_invoices(conn: psycopg.Connection) -> None:
    now = datetime.now(PARIS)
    insert_invoice(conn, number="RECENT", send_state="PRET", created_at=now - timedelta(days=2))
    insert_invoice(conn, number="OLD", send_state="PRET", created_at=now - timedelta(days=60))
    selection = Selection.defaults("factures_envoi_nocturne").created_in_last_days(31, now.date())
    ids = select_ids(conn, selection)
    got = {r[0] for r in conn.execute("SELECT number FROM invoices WHERE id = ANY(%s)", (ids,))}
    assert got == {"RECENT"}


def test_selection_is_in_invoice_number_order(book) -> None:  # type: ignore[no-untyped-def]
    frame = select_frame(book, Selection.defaults("factures_imprimer"))
    assert list(frame["numero"]) == sorted(frame["numero"])
    assert set(frame["etat"]) <= {"En attente", "Prêt", "Envoyé au destinataire"}


def test_default_print_query_uses_the_unedited_index_on_a_large_book(
    conn: psycopg.Connection,
) -> None:
    customer = insert_customer(conn)
    conn.execute(
        "INSERT INTO invoices (number, customer_id, invoice_date, due_date, batch_number, "
        "created_by, payment_mode, total_net, total_vat, total_gross, edited_at, edited_by) "
        "SELECT 'G' || g, %s, DATE '2026-11-01', DATE '2026-12-01', g / 1000, 'mdupont', "
        "'virement', 100, 20, 120, CASE WHEN g %% 200 = 0 THEN NULL ELSE now() END, 'mdupont' "
        "FROM generate_series(1, 100000) g",
        (customer,),
    )
    conn.execute("ANALYZE invoices")
    plan = explain(conn, Selection.defaults("factures_imprimer"))
    assert "Seq Scan on invoices" not in plan, plan
    narrow = Selection.from_params(
        "factures_imprimer", {"lot_debut": 7, "lot_fin": 7, "sans_date_edition": False}
    )
    plan = explain(conn, narrow)
    assert "Seq Scan on invoices" not in plan, plan
    assert len(select_ids(conn, narrow)) == 1000
