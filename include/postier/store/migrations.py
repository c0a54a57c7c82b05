"""Numbered schema migrations from `include/sql/NNN_*.sql`, each applied once, in order."""

from __future__ import annotations

from pathlib import Path

import psycopg

from postier import SQL_DIR

#: Any constant shared by concurrent migrators: they queue on it instead of racing.
_MIGRATION_LOCK = 4_242_001


def migration_files(folder: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations, one transaction each; the names applied now."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8").encode())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
            applied_now.append(path.name)
    return applied_now
