"""The database's guarantees hold against the tasks' own role (issue 9).

The tasks connect as `postier_app` (the `conn` fixture), which owns nothing: every way around the
sent-invoice guard that an owner or a superuser has must be refused to it.
"""

from __future__ import annotations

import psycopg
import pytest
from builders import insert_invoice

from postier.domain.treatments import SEND
from postier.store.migrations import migrate
from postier.store.transitions import apply_transition


@pytest.fixture
def sent(conn: psycopg.Connection) -> int:
    invoice = insert_invoice(conn, send_state="PRET", lines=2)
    apply_transition(conn, [invoice], SEND, "jmartin")
    return invoice


def _content(conn: psycopg.Connection, invoice: int) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT i.total_gross, i.send_state,"
        " (SELECT count(*) FROM invoice_lines WHERE invoice_id = i.id),"
        " (SELECT count(*) FROM invoice_due_dates WHERE invoice_id = i.id)"
        " FROM invoices i WHERE i.id = %s",
        (invoice,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_task_role_is_neither_superuser_nor_owner(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb,"
        " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = 'public' AND c.relowner = r.oid)"
        " FROM pg_roles r WHERE rolname = current_user"
    ).fetchone()
    assert row == ("postier_app", False, False, False, 0)


@pytest.mark.parametrize(
    "bypass",
    [
        "TRUNCATE invoices CASCADE",
        "TRUNCATE invoice_lines",
        "ALTER TABLE invoices DISABLE TRIGGER invoices_sent_immutable",
        "ALTER TABLE invoice_lines DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "DROP TRIGGER invoices_sent_immutable ON invoices",
        "CREATE OR REPLACE FUNCTION postier_sent_invoice_guard() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "ALTER FUNCTION postier_sent_invoice_guard() RENAME TO old_guard",
        "CREATE TABLE shadow (id int)",
        "DELETE FROM schema_migrations",
    ],
)
def test_task_role_cannot_bypass_the_guard(
    conn: psycopg.Connection, sent: int, bypass: str
) -> None:
    before = _content(conn, sent)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute(bypass)
    # The guard still bites afterwards, and the invoice is intact.
    with pytest.raises(psycopg.errors.RaiseException, match="a été envoyée"):
        with conn.transaction():
            conn.execute("UPDATE invoices SET total_gross = 0 WHERE id = %s", (sent,))
    assert _content(conn, sent) == before


@pytest.mark.parametrize(
    "move",
    [
        "UPDATE invoice_lines SET invoice_id = %(sent)s WHERE invoice_id = %(draft)s",
        "UPDATE invoice_due_dates SET invoice_id = %(sent)s WHERE invoice_id = %(draft)s",
    ],
)
def test_rows_cannot_be_moved_into_a_sent_invoice(
    conn: psycopg.Connection, sent: int, move: str
) -> None:
    draft = insert_invoice(conn, send_state="PRET", lines=1)
    conn.execute(
        "INSERT INTO invoice_due_dates (invoice_id, position, due_date, amount)"
        " VALUES (%s, 1, '2027-01-01', 120)",
        (draft,),
    )
    before = _content(conn, sent)
    with pytest.raises(psycopg.errors.RaiseException, match="a été envoyée au destinataire"):
        with conn.transaction():
            conn.execute(move, {"sent": sent, "draft": draft})
    assert _content(conn, sent) == before


def test_migrations_cover_later_tables_for_the_task_role(
    conn: psycopg.Connection, owner_dsn: str
) -> None:
    with psycopg.connect(owner_dsn) as owner:
        owner.execute("CREATE TABLE later_feature (id serial PRIMARY KEY, note text)")
        migrate(owner)
    conn.execute("INSERT INTO later_feature (note) VALUES ('ok')")
    assert conn.execute("SELECT note FROM later_feature").fetchall() == [("ok",)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute("TRUNCATE later_feature")


def test_cli_migrate_refuses_the_task_role_connection(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from postier.cli import main

    monkeypatch.setenv("POSTIER_DB_DSN", db_dsn)
    monkeypatch.delenv("POSTIER_DB_OWNER_DSN", raising=False)
    assert main(["db", "migrate"]) == 2
    assert "POSTIER_DB_OWNER_DSN" in capsys.readouterr().err
