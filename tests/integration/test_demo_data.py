from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest
from stdnum import iban
from stdnum.fr import siren, siret, tva

from postier.demo_data import describe, seed
from postier.errors import PostierError
from postier.store.cluster import LocalCluster

TODAY = date(2026, 3, 16)
SIZE = 2000

INVOICE_ROWS = """
    SELECT i.number, i.kind, c.code, i.invoice_date, i.due_date, i.batch_number, i.created_by,
           i.created_at, i.payment_mode, i.total_net, i.total_vat, i.total_gross, i.send_state,
           i.edited_at, i.edited_by, i.sent_at, i.sent_by, i.dematerialized,
           i.chorus_service_code, i.chorus_engagement_number,
           (SELECT array_agg(ARRAY[l.description, l.quantity::text, l.unit_price::text,
                                   l.vat_rate::text, l.net_amount::text] ORDER BY l.position)
              FROM invoice_lines l WHERE l.invoice_id = i.id)
      FROM invoices i JOIN customers c ON c.id = i.customer_id
     ORDER BY i.number
"""


@pytest.fixture
def seeded(conn: psycopg.Connection) -> psycopg.Connection:
    seed(conn, SIZE, seed=7, today=TODAY)
    return conn


@pytest.fixture
def other_conn(pg_cluster: LocalCluster) -> Iterator[psycopg.Connection]:
    """A second fresh database, to compare two seeds."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = pg_cluster.create_database(name, template="postier_template")
    with psycopg.connect(dsn) as connection:
        yield connection
    pg_cluster.drop_database(name)


def scalar(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_summary_counts_match_the_rows_written(conn: psycopg.Connection) -> None:
    summary = seed(conn, SIZE, seed=3, today=TODAY)
    assert summary.invoices == SIZE == scalar(conn, "SELECT count(*) FROM invoices")
    assert summary.customers == scalar(conn, "SELECT count(*) FROM customers")
    assert summary.lines == scalar(conn, "SELECT count(*) FROM invoice_lines")
    assert summary.due_dates == scalar(conn, "SELECT count(*) FROM invoice_due_dates")
    assert summary.duration_s > 0


def test_line_nets_are_quantity_times_price_rounded_half_up(seeded: psycopg.Connection) -> None:
    bad = seeded.execute(
        "SELECT invoice_id, position, quantity, unit_price, net_amount FROM invoice_lines"
        " WHERE net_amount <> round(quantity * unit_price, 2)"
    ).fetchall()
    assert bad == []
    # Some prices carry more than two decimals, so the rounding is really exercised.
    assert scalar(seeded, "SELECT count(*) FROM invoice_lines WHERE scale(unit_price) > 2") > 0


def test_totals_add_up_to_the_cent_with_vat_rounded_per_rate(seeded: psycopg.Connection) -> None:
    bad = seeded.execute(
        """
        WITH per_rate AS (
            SELECT invoice_id, sum(net_amount) AS base,
                   round(sum(net_amount) * vat_rate / 100, 2) AS vat
              FROM invoice_lines GROUP BY invoice_id, vat_rate),
        expected AS (
            SELECT invoice_id, sum(base) AS net, sum(vat) AS vat
              FROM per_rate GROUP BY invoice_id)
        SELECT i.number, i.total_net, e.net, i.total_vat, e.vat, i.total_gross
          FROM invoices i LEFT JOIN expected e ON e.invoice_id = i.id
         WHERE e.invoice_id IS NULL OR i.total_net <> e.net OR i.total_vat <> e.vat
            OR i.total_gross <> i.total_net + i.total_vat
        """
    ).fetchall()
    assert bad == []
    rates = {r[0] for r in seeded.execute("SELECT DISTINCT vat_rate FROM invoice_lines")}
    assert rates == {Decimal("20.00"), Decimal("10.00"), Decimal("5.50"), Decimal("2.10")}


def test_split_due_dates_sum_to_the_gross_total(seeded: psycopg.Connection) -> None:
    rows = seeded.execute(
        """
        SELECT i.number, i.total_gross, sum(d.amount), count(*), min(d.due_date), i.due_date
          FROM invoices i JOIN invoice_due_dates d ON d.invoice_id = i.id
         GROUP BY i.id
        """
    ).fetchall()
    assert rows, "some invoices must have a split schedule"
    assert {r[3] for r in rows} >= {2, 3, 4}
    for number, gross, total, _count, first_due, due_date in rows:
        assert total == gross, number
        assert first_due == due_date, number
    modes = {
        r[0]
        for r in seeded.execute(
            "SELECT DISTINCT i.payment_mode FROM invoices i JOIN invoice_due_dates d"
            " ON d.invoice_id = i.id"
        )
    }
    assert {"lcr", "billet_ordre"} <= modes


def test_identifiers_are_valid_or_deliberately_missing(seeded: psycopg.Connection) -> None:
    rows = seeded.execute(
        "SELECT code, siren, siret, vat_number, iban, bic FROM customers"
    ).fetchall()
    for code, siren_, siret_, vat, iban_, bic in rows:
        assert siren_ is not None and siren.is_valid(siren_), code
        if siret_ is not None:
            assert siret.is_valid(siret_) and siret_.startswith(siren_), code
        if vat is not None:
            assert tva.is_valid(vat) and vat.endswith(siren_), code
        assert (iban_ is None) == (bic is None), code
        if iban_ is not None:
            assert iban.is_valid(iban_) and iban_.startswith("FR") and len(iban_) == 27, code
            # The IBAN check does not cover the French RIB key: a valid RIB is ≡ 0 mod 97.
            assert int(iban_[4:]) % 97 == 0, code
            assert len(bic) in (8, 11) and bic[4:6] == "FR", code
    assert len({r[1] for r in rows}) == len(rows), "one SIREN per customer"


def test_every_channel_payment_mode_state_and_kind_is_present(seeded: psycopg.Connection) -> None:
    frame = describe(seeded)
    values = {(d, v) for d, v in zip(frame["dimension"], frame["valeur"], strict=True)}
    assert {("canal", c) for c in ("portail", "chorus", "papier")} <= values
    modes = ("virement", "cheque", "lcr", "billet_ordre", "prelevement", "carte")
    assert {("mode_paiement", m) for m in modes} <= values
    states = ("EN_ATTENTE", "PRET", "ENVOYE", "CONSERVE_INTERNE")
    assert {("etat_envoi", s) for s in states} <= values
    assert {("type", "facture"), ("type", "avoir")} <= values
    assert frame["factures"].sum() == 4 * SIZE
    counts = dict(seeded.execute("SELECT send_state, count(*) FROM invoices GROUP BY 1").fetchall())
    assert counts["EN_ATTENTE"] == max(counts.values()), "mostly waiting invoices"


def test_numbers_follow_the_erp_format(seeded: psycopg.Connection) -> None:
    wrong = seeded.execute(
        """
        SELECT number, kind FROM invoices
         WHERE NOT (kind = 'facture' AND number ~ '^FA\\d{4}-\\d{6}$'
                 OR kind = 'avoir' AND number ~ '^AV\\d{4}-\\d{6}$')
            OR substring(number FROM 3 FOR 4)::int <> extract(year FROM invoice_date)
        """
    ).fetchall()
    assert wrong == []
    # Numbers are handed out in creation order.
    ordered = [
        r[0]
        for r in seeded.execute(
            "SELECT number FROM invoices WHERE kind = 'facture' ORDER BY created_at, number"
        )
    ]
    assert [n[-6:] for n in ordered] == sorted(n[-6:] for n in ordered)


def test_deliberately_invalid_cases_are_present(seeded: psycopg.Connection) -> None:
    checks = {
        "0 € invoices": "SELECT count(*) FROM invoices WHERE total_gross = 0",
        "0 € invoices waiting": (
            "SELECT count(*) FROM invoices WHERE total_gross = 0 AND send_state = 'EN_ATTENTE'"
        ),
        "portal customers without e-mail, invoiced": (
            "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
            " WHERE c.channel = 'portail' AND cardinality(c.emails) = 0"
        ),
        "Chorus customers without SIRET, invoiced": (
            "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
            " WHERE c.channel = 'chorus' AND c.siret IS NULL"
        ),
        "Chorus invoices missing a required service code": (
            "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
            " WHERE c.channel = 'chorus' AND c.chorus_service_required"
            " AND i.chorus_service_code IS NULL"
        ),
        "Chorus invoices missing a required engagement number": (
            "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
            " WHERE c.channel = 'chorus' AND c.chorus_engagement_required"
            " AND i.chorus_engagement_number IS NULL"
        ),
        "bills of exchange without the drawee's bank details": (
            "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
            " WHERE i.payment_mode IN ('lcr', 'billet_ordre') AND c.iban IS NULL"
        ),
    }
    missing = [name for name, query in checks.items() if scalar(seeded, query) == 0]
    assert missing == []


def test_no_ready_or_sent_invoice_is_one_that_its_channel_refuses(
    seeded: psycopg.Connection,
) -> None:
    from postier.domain.validation import sending_problems
    from postier.store.invoices import fingerprint, load_invoices

    rows = seeded.execute(
        "SELECT id, fingerprint FROM invoices WHERE send_state IN ('PRET', 'ENVOYE')"
    ).fetchall()
    stored = dict(rows)
    invoices = load_invoices(seeded, list(stored))
    assert len(invoices) > SIZE // 4
    refused = {i.number: sending_problems(i) for i in invoices if sending_problems(i)}
    assert refused == {}
    # As the preparation leaves them: fingerprinted, so a later edit is caught at sending.
    assert all(stored[i.id] == fingerprint(i) for i in invoices)
    # The defects are still there, on invoices waiting for their preparation.
    waiting = scalar(
        seeded,
        "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id "
        "WHERE i.send_state = 'EN_ATTENTE' AND c.channel = 'chorus' AND c.siret IS NULL",
    )
    assert waiting > 0


def test_valid_chorus_invoices_carry_their_required_references(
    seeded: psycopg.Connection,
) -> None:
    complete = scalar(
        seeded,
        "SELECT count(*) FROM invoices i JOIN customers c ON c.id = i.customer_id"
        " WHERE c.channel = 'chorus' AND c.siret IS NOT NULL"
        " AND c.chorus_service_required AND c.chorus_engagement_required"
        " AND i.chorus_service_code IS NOT NULL AND i.chorus_engagement_number IS NOT NULL",
    )
    assert complete > 0
    public_names = [
        r[0] for r in seeded.execute("SELECT name FROM customers WHERE channel = 'chorus'")
    ]
    assert any(
        n.startswith(("Mairie de", "Centre hospitalier", "Université")) for n in public_names
    )
    assert (
        scalar(
            seeded,
            "SELECT count(*) FROM invoices WHERE chorus_service_code IS NOT NULL"
            " AND customer_id IN (SELECT id FROM customers WHERE channel <> 'chorus')",
        )
        == 0
    )


def test_variety_of_lines_batches_and_operators(seeded: psycopg.Connection) -> None:
    per_invoice = [
        r[0] for r in seeded.execute("SELECT count(*) FROM invoice_lines GROUP BY invoice_id")
    ]
    assert min(per_invoice) == 1 and max(per_invoice) >= 40
    assert sum(1 for n in per_invoice if n <= 8) > 0.95 * len(per_invoice)
    units = {r[0] for r in seeded.execute("SELECT DISTINCT unit FROM invoice_lines")}
    assert {"U", "H", "KG", "M2", "J"} <= units
    batches = [r[0] for r in seeded.execute("SELECT DISTINCT batch_number FROM invoices")]
    assert len(batches) > 10 and min(batches) >= 1000
    assert scalar(seeded, "SELECT count(DISTINCT created_by) FROM invoices") >= 3
    assert 0 < scalar(seeded, "SELECT count(*) FROM invoices WHERE edited_at IS NOT NULL") < SIZE
    assert (
        scalar(
            seeded, "SELECT count(*) FROM invoices WHERE (edited_at IS NULL) <> (edited_by IS NULL)"
        )
        == 0
    )


def test_dates_fall_in_the_window_during_business_hours(seeded: psycopg.Connection) -> None:
    paris = ZoneInfo("Europe/Paris")
    rows = seeded.execute(
        "SELECT number, invoice_date, due_date, created_at, edited_at, sent_at FROM invoices"
    ).fetchall()
    for number, invoice_date, due_date, created_at, edited_at, sent_at in rows:
        assert TODAY - timedelta(days=90) <= invoice_date <= TODAY, number
        assert invoice_date.weekday() < 5, number
        assert (due_date - invoice_date).days in (30, 45, 60), number
        local = created_at.astimezone(paris)
        assert local.date() == invoice_date, number
        assert time(8, 0) <= local.time() <= time(18, 30), number
        for later in (edited_at, sent_at):
            if later is not None:
                assert created_at < later, number
                assert later.astimezone(paris).date() <= TODAY, number
                assert time(8, 0) <= later.astimezone(paris).time() <= time(20, 30), number


def test_sent_invoices_are_stamped_and_immutable(seeded: psycopg.Connection) -> None:
    rows = seeded.execute(
        "SELECT id, sent_at, sent_by, state_changed_at, dematerialized, dematerialized_channel"
        " FROM invoices WHERE send_state = 'ENVOYE'"
    ).fetchall()
    assert rows
    assert all(r[1] is not None and r[2] and r[3] == r[1] for r in rows)
    demat = {r[5] for r in rows if r[4]}
    assert demat == {"artis", "chorus"}
    assert any(not r[4] for r in rows)
    assert (
        scalar(
            seeded,
            "SELECT count(*) FROM invoices WHERE send_state <> 'ENVOYE'"
            " AND (sent_at IS NOT NULL OR dematerialized)",
        )
        == 0
    )
    # Sent invoices have their lines, inserted before they became immutable.
    sent_id = rows[0][0]
    assert scalar(seeded, f"SELECT count(*) FROM invoice_lines WHERE invoice_id = {sent_id}") > 0
    with pytest.raises(psycopg.errors.RaiseException), seeded.transaction():
        seeded.execute("UPDATE invoices SET total_net = 0 WHERE id = %s", (sent_id,))


def test_same_seed_gives_identical_rows(
    conn: psycopg.Connection, other_conn: psycopg.Connection
) -> None:
    seed(conn, 500, seed=11, today=TODAY)
    seed(other_conn, 500, seed=11, today=TODAY)
    assert conn.execute(INVOICE_ROWS).fetchall() == other_conn.execute(INVOICE_ROWS).fetchall()
    customers = "SELECT * FROM customers ORDER BY code"
    assert conn.execute(customers).fetchall() == other_conn.execute(customers).fetchall()


def test_different_seed_gives_different_rows(
    conn: psycopg.Connection, other_conn: psycopg.Connection
) -> None:
    seed(conn, 500, seed=11, today=TODAY)
    seed(other_conn, 500, seed=12, today=TODAY)
    assert conn.execute(INVOICE_ROWS).fetchall() != other_conn.execute(INVOICE_ROWS).fetchall()


def test_seeding_twice_continues_numbering(conn: psycopg.Connection) -> None:
    first = seed(conn, 300, seed=1, today=TODAY)
    before = conn.execute(
        "SELECT max(number) FILTER (WHERE kind = 'facture'), max(code), max(batch_number),"
        " max(i.id) FROM invoices i JOIN customers c ON c.id = i.customer_id"
    ).fetchone()
    assert before is not None
    second = seed(conn, 300, seed=1, today=TODAY)
    assert scalar(conn, "SELECT count(*) FROM invoices") == first.invoices + second.invoices
    assert scalar(conn, "SELECT count(*) FROM customers") == first.customers + second.customers
    new = conn.execute(
        "SELECT min(number) FILTER (WHERE kind = 'facture'), min(code), min(batch_number)"
        " FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE i.id > %s",
        (before[3],),
    ).fetchone()
    assert new is not None
    assert new[0][-6:] > before[0][-6:]
    assert new[1] > before[1]
    assert new[2] > before[2]
    # Ordinary inserts after a seed still get free ids from the identity sequence.
    conn.execute(
        "INSERT INTO customers (code, name, address_line1, postal_code, city)"
        " VALUES ('MANUEL', 'Client saisi', '1 rue Haute', '69001', 'Lyon')"
    )


def test_refuses_a_non_positive_count_and_writes_nothing(conn: psycopg.Connection) -> None:
    with pytest.raises(PostierError, match="au moins une"):
        seed(conn, 0, today=TODAY)
    assert scalar(conn, "SELECT count(*) FROM invoices") == 0
