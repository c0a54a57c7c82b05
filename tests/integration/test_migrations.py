from __future__ import annotations

import psycopg
import pytest

from postier.store.migrations import migrate, migration_files


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
