"""A local PostgreSQL cluster that the project creates and starts itself.

Used when no database is configured (`POSTIER_DB_DSN` unset, no `postier_db` connection), and by
the test harness. The server listens on a free loopback port only (no Unix socket); as root it runs
as the `postgres` user, since PostgreSQL refuses to run as root.

Three roles, as a production database should have them: the bootstrap superuser (creates roles and
databases, nothing else), `postier_owner` (owns the database and every table: migrations run as
it) and `postier_app` (what the tasks connect as: reads and writes rows, nothing more; see
`store.migrations.grant_task_role`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from postier.errors import ConfigurationError

SUPERUSER = "postier"
OWNER_ROLE = "postier_owner"
APP_ROLE = "postier_app"
DEFAULT_DATABASE = "postier"
INSTALL_HINT = (
    "PostgreSQL introuvable : installez les binaires du serveur PostgreSQL "
    "(Debian/Ubuntu : « apt-get install postgresql ») ou indiquez une base existante "
    "avec POSTIER_DB_DSN."
)


def find_binaries() -> Path:
    """Folder holding `initdb` and `pg_ctl`: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise ConfigurationError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether PostgreSQL can listen on `port`. It binds with SO_REUSEADDR, and so does this
    probe: without it, the connections its last stop closed (TIME_WAIT, a minute) made the port
    look taken, and a restart moved the cluster to another port, away from the DSNs handed out
    before. Another socket listening there still makes the bind fail."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


_ADOPT_SQL = f"""
DO $$
DECLARE r record;
BEGIN
    IF (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public')
       = '{SUPERUSER}' THEN
        ALTER SCHEMA public OWNER TO pg_database_owner;
    END IF;
    FOR r IN SELECT c.oid::regclass AS obj FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
               AND pg_get_userbyid(c.relowner) = '{SUPERUSER}' LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO {OWNER_ROLE}', r.obj);
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS obj FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'S'
               AND pg_get_userbyid(c.relowner) = '{SUPERUSER}' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO {OWNER_ROLE}', r.obj);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS obj FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) = '{SUPERUSER}' LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO {OWNER_ROLE}', r.obj);
    END LOOP;
END $$
"""


@dataclass
class LocalCluster:
    """A cluster under `base` (`data/`, `port`, `server.log`)."""

    base: Path
    #: Commits made durable as on a production server (`fsync`, `full_page_writes`:
    #: PostgreSQL's defaults, as `synchronous_commit`). A developer's or a test's cluster
    #: skips them: a crash loses a throwaway database, and every commit is faster.
    durable: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def port_file(self) -> Path:
        return self.base / "port"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def dsn(self, database: str = DEFAULT_DATABASE, role: str = APP_ROLE) -> str:
        """Connection string as `role`: by default the task role, which owns nothing."""
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def owner_dsn(self, database: str = DEFAULT_DATABASE) -> str:
        """As the owner role: for migrations (DDL), never for tasks."""
        return self.dsn(database, OWNER_ROLE)

    def admin_dsn(self, database: str = "postgres") -> str:
        """As the bootstrap superuser: roles, databases, extensions, server settings."""
        return self.dsn(database, SUPERUSER)

    # -- lifecycle -------------------------------------------------------------------------

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ConfigurationError(
                "Exécuté en root, le serveur PostgreSQL doit tourner sous l'utilisateur "
                "« postgres », qui n'existe pas : installez le paquet postgresql."
            ) from None
        return "postgres"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(find_binaries() / tool), *args]
        done = subprocess.run(
            cmd, user=self._run_as(), capture_output=True, text=True, check=False, cwd="/"
        )
        if check and done.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ConfigurationError(
                f"PostgreSQL local : « {tool} » a échoué ({done.returncode}) : "
                f"{done.stderr.strip() or done.stdout.strip()}\n{log}"
            )
        return done

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user:
            shutil.chown(self.base, user, user)
        # Trust on loopback only: a developer's throwaway cluster, never a production database.
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._pg("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> str:
        """Initialise if needed, start if not running, create the default database; the DSN."""
        self.init()
        if not self.running():
            port = self.port if self.port_file.exists() else free_port()
            if not _port_is_free(port):
                port = free_port()
            self.port_file.write_text(f"{port}\n")
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c max_connections=200"
            )
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off"
            self._pg(
                "pg_ctl",
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                options,
            )
        self.create_roles()
        self.create_database(DEFAULT_DATABASE)
        self._adopt(DEFAULT_DATABASE)
        return self.dsn()

    def stop(self) -> None:
        if self.running():
            self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def create_roles(self) -> None:
        """The owner and task roles: log in (trust on loopback), no superuser, no CREATEROLE."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            # The owner inherits `pg_database_owner`, which owns the schema `public` (PG 15+).
            for role in (OWNER_ROLE, APP_ROLE):
                if not conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone():
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                            sql.Identifier(role)
                        )
                    )

    def create_database(self, name: str, template: str | None = None) -> str:
        """A database owned by the owner role (so it owns `public`); the task role's DSN."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                stmt = sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(OWNER_ROLE)
                )
                if template:
                    stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                conn.execute(stmt)
        return self.dsn(name)

    def _adopt(self, name: str) -> None:
        """Hand a cluster made before the role split (all owned by the superuser) to the owner."""
        with psycopg.connect(self.admin_dsn(name), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(OWNER_ROLE)
                )
            )
            stale = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles"
                " WHERE rolname = %s)",
                (SUPERUSER,),
            ).fetchone()
            if not stale or not stale[0]:
                return
            # Tables carry their serial sequences along; functions are handed over one by one.
            conn.execute(_ADOPT_SQL)
        from postier.store.migrations import grant_task_role

        with psycopg.connect(self.owner_dsn(name)) as conn:
            grant_task_role(conn)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
