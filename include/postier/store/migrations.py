"""Numbered schema migrations from `include/sql/NNN_*.sql`, each applied once, in order.

Migrations run as the owner role; the tasks connect as a separate task role (`POSTIER_DB_APP_ROLE`,
default `postier_app`) that owns nothing. After every run the task role is granted row access to
every table (not `schema_migrations`) and the owner's default privileges give it the same on the
tables of later migrations. Not being owner nor superuser, the task role cannot TRUNCATE, ALTER
(no DISABLE TRIGGER), replace a guard function or set `session_replication_role`.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql

from postier import SQL_DIR
from postier.errors import ConfigurationError

#: Any constant shared by concurrent migrators: they queue on it instead of racing.
_MIGRATION_LOCK = 4_242_001


def migration_files(folder: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the pending migrations, all in ONE transaction; the names applied now.

    Concurrent migrators queue on the transaction's advisory lock. Each migration runs in a
    savepoint of that transaction and the task role's grants come last in it, so a migration
    that fails rolls back every migration of the call (none is recorded: the next call applies
    them again), and the locks a migration takes are held until the whole call commits (021's
    DROP INDEX: an ACCESS EXCLUSIVE lock on `exchanges`, which the tasks then wait on)."""
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
        grant_task_role(conn)
    return applied_now


def task_role() -> str:
    return os.environ.get("POSTIER_DB_APP_ROLE") or "postier_app"


def grant_task_role(conn: psycopg.Connection, role: str | None = None) -> None:
    """Row access for the task role on every table, now and for later tables of this owner."""
    role = role or task_role()
    found = conn.execute(
        "SELECT rolsuper, pg_has_role(rolname, current_user, 'USAGE')"
        " FROM pg_roles WHERE rolname = %s",
        (role,),
    ).fetchone()
    if found is None:
        raise ConfigurationError(
            f"Le rôle des traitements « {role} » n'existe pas dans la base : créez-le "
            "(CREATE ROLE … LOGIN, ni superutilisateur ni propriétaire) ou indiquez son nom "
            "dans POSTIER_DB_APP_ROLE."
        )
    if found[0] or found[1]:
        raise ConfigurationError(
            f"Le rôle des traitements « {role} » est superutilisateur ou membre du rôle "
            "propriétaire : il pourrait contourner les protections de la base. Utilisez un "
            "rôle distinct, sans droits d'administration."
        )
    ident = sql.Identifier(role)
    owner = sql.Identifier(str(conn.execute("SELECT current_user").fetchone()[0]))  # type: ignore[index]
    with conn.transaction():
        for stmt in (
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            "REVOKE ALL ON schema_migrations FROM {role}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            " GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        ):
            conn.execute(sql.SQL(stmt).format(role=ident, owner=owner))
