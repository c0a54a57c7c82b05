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
