from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from builders import insert_customer

from postier.store import migrations
from postier.store.migrations import migrate, migration_files

#: Every exchange row, in one value, with their count.
EXCHANGES_DIGEST = "SELECT count(*), md5(string_agg(e::text, ',' ORDER BY e.id)) FROM exchanges e"


def test_migrate_is_idempotent_and_records_each_file(owner_dsn: str) -> None:
    # The template is already migrated: a second run applies nothing.
    with psycopg.connect(owner_dsn) as conn:
        assert migrate(conn) == []
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [p.name for p in migration_files()]


def test_migrate_refuses_to_run_as_the_task_role(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        migrate(conn)


def test_default_settings_are_seeded(conn: psycopg.Connection) -> None:
    value = conn.execute(
        "SELECT value FROM settings WHERE key = 'NB_JOURS_AVANT_ENVOI_FACTURES'"
    ).fetchone()
    assert value is not None and int(value[0]) > 0


def test_a_database_of_the_previous_release_keeps_its_runs_without_their_chunk_size(
    owner_dsn: str,
) -> None:
    # As the previous release left it: one chunk size per run, written and never read, wrong
    # since chunks share the work rather than the count.
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '020\\_%'")
        conn.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS chunk_size integer")
        conn.execute(
            "INSERT INTO runs (treatment, criteria, triggered_by, chunk_size) "
            "VALUES ('factures_envoyer', '{}', 'jmartin', 220)"
        )
        conn.commit()
        applied = migrate(conn)
        runs = conn.execute("SELECT treatment, triggered_by FROM runs").fetchall()
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'"
            )
        ]
    assert applied == [p.name for p in migration_files() if p.name.startswith("020_")] != []
    assert runs == [("factures_envoyer", "jmartin")]
    assert "chunk_size" not in columns and "output_dir" in columns


def test_a_database_of_the_previous_release_loses_only_the_exchanges_index_on_invoice_alone(
    owner_dsn: str,
) -> None:
    # As the previous release left it: exchanges indexed on (invoice_id) and on (invoice_id, at).
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '021\\_%'")
        conn.execute("CREATE INDEX IF NOT EXISTS exchanges_invoice ON exchanges (invoice_id)")
        customer = insert_customer(conn, channel="papier")
        conn.execute(
            "INSERT INTO invoices (number, customer_id, invoice_date, due_date, batch_number, "
            "created_by, payment_mode, total_net, total_vat, total_gross) "
            "SELECT 'F' || g, %s, DATE '2026-11-01', DATE '2026-12-01', 1, 'mdupont', "
            "'virement', 100, 20, 120 FROM generate_series(1, 2000) g",
            (customer,),
        )
        conn.execute(
            "INSERT INTO exchanges (invoice_id, kind, partner, status, by) "
            "SELECT id, 'changement_etat', 'ARTIS', 'PRET', 'jmartin' FROM invoices, "
            "generate_series(1, 5)"
        )
        before = conn.execute(EXCHANGES_DIGEST).fetchone()
        conn.commit()
        applied = migrate(conn)
        after = conn.execute(EXCHANGES_DIGEST).fetchone()
        conn.execute("ANALYZE exchanges")
        indexes = [
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'exchanges'")
        ]
        ids = [r[0] for r in conn.execute("SELECT id FROM invoices ORDER BY id LIMIT 3")]
        # The reads that used it, as the code writes them: an invoice's history
        # (store/invoice_history.py), the lifecycle's look-up of the statuses already logged
        # (pipeline/lifecycle.py).
        history = conn.execute(
            "EXPLAIN SELECT at, kind, partner, status, by, report FROM exchanges "
            "WHERE invoice_id = %s ORDER BY at, id",
            (ids[0],),
        ).fetchall()
        replays = conn.execute(
            "EXPLAIN SELECT invoice_id, status, (report->>'date')::timestamptz FROM exchanges "
            "WHERE invoice_id = ANY(%s::bigint[]) AND kind = %s",
            (ids, "cycle_de_vie"),
        ).fetchall()
        plans = ["\n".join(r[0] for r in rows) for rows in (history, replays)]
    assert applied == [p.name for p in migration_files() if p.name.startswith("021_")] != []
    assert "exchanges_invoice" not in indexes and "exchanges_invoice_at" in indexes
    for plan in plans:
        assert "exchanges_invoice_at" in plan and "Seq Scan" not in plan, plan
    # Every exchange row as it was.
    assert after == before


def test_a_migration_that_fails_leaves_none_of_the_migrations_of_its_call_applied(
    owner_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 020 and 021 pending, as on a database of two releases ago, then a migration that fails:
    # all run in one transaction, so neither 020 nor 021 stays applied nor recorded.
    broken = tmp_path / "999_broken.sql"
    broken.write_text("ALTER TABLE runs ADD COLUMN nonsense no_such_type;\n")
    files = [*migration_files(), broken]
    monkeypatch.setattr(migrations, "migration_files", lambda: files)
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            "DELETE FROM schema_migrations WHERE name LIKE '020\\_%' OR name LIKE '021\\_%'"
        )
        conn.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS chunk_size integer")
        conn.execute("CREATE INDEX IF NOT EXISTS exchanges_invoice ON exchanges (invoice_id)")
        conn.commit()
        with pytest.raises(psycopg.errors.UndefinedObject):
            migrate(conn)
        recorded = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
        index = conn.execute("SELECT to_regclass('exchanges_invoice')").fetchone()
        column = conn.execute(
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'runs' AND column_name = 'chunk_size'"
        ).fetchone()
    assert not [name for name in recorded if name[:4] in ("020_", "021_", "999_")]
    assert index == ("exchanges_invoice",) and column == (1,)


def test_a_database_of_the_previous_release_keeps_its_run_items_indexed_without_their_status(
    owner_dsn: str,
) -> None:
    # As the previous release left it: run items indexed on (run_id, chunk, status), pages
    # packed, a run half done.
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '024\\_%'")
        conn.execute("DROP INDEX run_items_run_chunk")
        conn.execute("CREATE INDEX run_items_chunk ON run_items (run_id, chunk, status)")
        conn.execute("ALTER TABLE run_items RESET (fillfactor)")
        customer = insert_customer(conn, channel="papier")
        conn.execute(
            "INSERT INTO invoices (number, customer_id, invoice_date, due_date, batch_number, "
            "created_by, payment_mode, total_net, total_vat, total_gross) "
            "SELECT 'F' || g, %s, DATE '2026-11-01', DATE '2026-12-01', 1, 'mdupont', "
            "'virement', 100, 20, 120 FROM generate_series(1, 400) g",
            (customer,),
        )
        run = conn.execute(
            "INSERT INTO runs (treatment, criteria, triggered_by) "
            "VALUES ('factures_envoyer', '{}', 'jmartin') RETURNING id"
        ).fetchone()
        assert run is not None
        conn.execute(
            "INSERT INTO run_items (run_id, invoice_id, position, chunk, status, done_at) "
            "SELECT %s, id, row_number() OVER (ORDER BY id), (row_number() OVER (ORDER BY id)"
            " - 1) / 200, CASE WHEN id %% 2 = 0 THEN 'traitee' ELSE 'a_traiter' END,"
            " CASE WHEN id %% 2 = 0 THEN now() END FROM invoices",
            (run[0],),
        )
        items = "SELECT md5(string_agg(r::text, ',' ORDER BY r.position)) FROM run_items r"
        before = conn.execute(items).fetchone()
        conn.commit()
        applied = migrate(conn)
        after = conn.execute(items).fetchone()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'run_items'"
            ).fetchall()
        )
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'run_items'::regclass"
        ).fetchone()
    assert applied == [p.name for p in migration_files() if p.name.startswith("024_")] != []
    assert "run_items_chunk" not in indexes
    assert indexes["run_items_run_chunk"].endswith("(run_id, chunk)")
    assert options == (["fillfactor=25"],)
    # Every item of the run as it was.
    assert after == before
