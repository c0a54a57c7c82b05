"""Where the ERP database is, and connections to it."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from postier import INCLUDE_DIR
from postier.errors import ConfigurationError
from postier.service_url import ENCODING_HINT, redacted
from postier.store.cluster import LocalCluster


def home() -> Path:
    """Local state of the project (cluster, GED folder, outbox, reports): `POSTIER_HOME`."""
    return Path(os.environ.get("POSTIER_HOME") or INCLUDE_DIR.parent / ".postier")


def local_cluster() -> LocalCluster:
    return LocalCluster(home() / "pg")


def resolve_dsn(start_local: bool = True) -> str:
    """The tasks' connection (task role): `POSTIER_DB_DSN` when set; otherwise the project's own
    local cluster, started if needed."""
    dsn = os.environ.get("POSTIER_DB_DSN")
    if dsn:
        return dsn
    cluster = local_cluster()
    return cluster.start() if start_local else cluster.dsn()


def resolve_owner_dsn() -> str:
    """The migrations' connection (owner role): `POSTIER_DB_OWNER_DSN`; else the local cluster."""
    dsn = os.environ.get("POSTIER_DB_OWNER_DSN")
    if dsn:
        return dsn
    if os.environ.get("POSTIER_DB_DSN"):
        raise ConfigurationError(
            "Les migrations s'exécutent avec le rôle propriétaire des tables, pas avec celui "
            "des traitements (POSTIER_DB_DSN) : indiquez sa connexion dans POSTIER_DB_OWNER_DSN."
        )
    cluster = local_cluster()
    cluster.start()
    return cluster.owner_dsn()


def connect(dsn: str, **kwargs: object) -> psycopg.Connection:
    check_dsn(dsn)
    return psycopg.connect(dsn, application_name="postier", **kwargs)  # type: ignore[arg-type]


def check_dsn(dsn: str) -> None:
    """Refuse a connection string libpq cannot parse, naming only its scheme and host: libpq's
    own message quotes the offending part, often the password."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ConfigurationError(
            f"connexion à la base ({redacted(dsn)}) illisible ; {ENCODING_HINT}."
        ) from None
