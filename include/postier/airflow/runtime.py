"""Resolve connections and the acting login at task execution time (never at parse time)."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, cast, overload
from urllib.parse import quote

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from postier import env_settings
from postier.airflow.preload import IMPORTED_CODE, PRELOADED_CODE, STARTUP_LOG, preloaded
from postier.delivery.mail import SmtpConfig
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.service_url import ENCODING_HINT
from postier.storage import GED, StorageConfig
from postier.store import database

if TYPE_CHECKING:
    from postier.delivery.annuaire import DirectoryConfig
    from postier.delivery.chorus_sftp import SftpConfig
    from postier.delivery.plateforme import PlatformConfig

log = logging.getLogger(__name__)

#: Login stamped by scheduled runs (nightly send, Chorus returns).
TECHNICAL_LOGIN = os.environ.get("POSTIER_TECHNICAL_LOGIN", "traitement-nocturne")

_C = TypeVar("_C", covariant=True)
_T = TypeVar("_T")


def _connection(conn_id: str) -> Any | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except ValueError:
        # Airflow's URI parser quotes what it chokes on, often a piece of the password.
        raise ConfigurationError(
            f"connexion Airflow « {conn_id} » illisible ; {ENCODING_HINT}."
        ) from None


def _dsn() -> str:
    """The `postier_db` connection; else `POSTIER_DB_DSN`; else the local cluster."""
    conn = _connection("postier_db")
    if conn is None:
        return database.resolve_dsn()
    auth = quote(conn.login or "", safe="")
    if conn.password:
        auth += ":" + quote(conn.password, safe="")
    host = f"{conn.host or '127.0.0.1'}:{conn.port or 5432}"
    return f"postgresql://{auth}@{host}/{conn.schema or 'postgres'}"


def _signing() -> tuple[bytes | None, bytes | None, str | None, str | None]:
    """`postier_signing`: extra `pkcs12_path` or `pkcs12_base64`, password = passphrase.

    A key that cannot be read is not an error here: it is the fourth item, raised by
    `Environment.signer()` when signing."""
    conn = _connection("postier_signing")
    if conn is None:
        return None, None, None, None
    extra = conn.extra_dejson
    try:
        if extra.get("pkcs12_base64"):
            data = base64.b64decode(extra["pkcs12_base64"], validate=True)
        else:
            data = Path(extra.get("pkcs12_path") or conn.host or "").read_bytes()
    except (OSError, ValueError):
        # Never the path's content nor the extra in the message: only where to look.
        return (
            b"",
            None,
            None,
            (
                "Certificat de signature introuvable ou illisible (connexion Airflow "
                "« postier_signing » : pkcs12_path ou pkcs12_base64)."
            ),
        )
    passphrase = conn.password.encode() if conn.password else None
    return data, passphrase, extra.get("timestamp_url"), None


def _ged() -> StorageConfig:
    """`postier_ged` (extra `url` or the host field, `host_key`, `private_key`,
    `storage_options`); else `POSTIER_GED_URL` (+ `POSTIER_GED_HOST_KEY`…)."""
    conn = _connection("postier_ged")
    if conn is None:
        return StorageConfig.from_env(place=GED)
    return StorageConfig.from_connection(
        conn.host, conn.port, conn.login, conn.password, conn.extra_dejson, place=GED
    )


class _ServiceConfig(Protocol[_C]):
    """A delivery's settings, read from an Airflow connection or else the environment."""

    def from_env(self) -> _C | None: ...

    def from_connection(
        self,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any],
    ) -> _C: ...


def _service(conn_id: str, config: _ServiceConfig[_C]) -> _C | None:
    """The connection `conn_id`; else the environment variables `config` reads; else None."""
    conn = _connection(conn_id)
    if conn is None:
        return config.from_env()
    return config.from_connection(
        conn.host, conn.port, conn.login, conn.password, conn.extra_dejson
    )


def _smtp() -> SmtpConfig | None:
    """`postier_smtp`; else `POSTIER_SMTP_URL`; else None (e-mails go to `<home>/outbox/`)."""
    return _service("postier_smtp", SmtpConfig)


def _chorus_sftp() -> SftpConfig | None:
    """`postier_chorus_sftp`; else `POSTIER_CHORUS_SFTP_URL` (+ `POSTIER_CHORUS_HOST_KEY`)."""
    from postier.delivery.chorus_sftp import SftpConfig

    return _service("postier_chorus_sftp", SftpConfig)


def _storage() -> StorageConfig:
    """`postier_storage`; else `POSTIER_STORAGE_URL` (…); else the local home folder."""
    return _service("postier_storage", StorageConfig) or StorageConfig()


def _plateforme() -> PlatformConfig | None:
    """`postier_plateforme`; else `POSTIER_PLATEFORME_URL`; else None."""
    from postier.delivery.plateforme import PlatformConfig

    return _service("postier_plateforme", PlatformConfig)


def _annuaire() -> DirectoryConfig | None:
    """`postier_annuaire`; else `POSTIER_ANNUAIRE_URL`; else None."""
    from postier.delivery.annuaire import DirectoryConfig

    return _service("postier_annuaire", DirectoryConfig)


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/stat") as stat:
            # Field 22, after the parenthesised command name: start time in clock ticks.
            started = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return up - started / os.sysconf("SC_CLK_TCK")


def environment() -> Environment:
    """What a task needs; each connection is read from Airflow when the task first uses it (see
    `TaskEnvironment`). Logs how long the task process took to be ready to work (start-up,
    imports, DAG file) and to make this (`make bench` reads both), and its CPU before working."""
    log.info(STARTUP_LOG, time.process_time(), PRELOADED_CODE if preloaded() else IMPORTED_CODE)
    age = _process_age()
    started = time.perf_counter()
    env = TaskEnvironment()
    if age is not None:
        log.info(
            "Tâche prête en %.2f s, environnement résolu en %.2f s",
            age,
            time.perf_counter() - started,
        )
    return env


class _ReadOnce(Generic[_T]):
    """A connection read the first time a task uses it, then kept: its settings, or the French
    `ConfigurationError` that refused it. `functools.cached_property` keeps no exception: a
    connection that cannot be read would be read (an api-server request) and refused again at
    each use, once per buyer looked up in the directory."""

    def __init__(self, read: Callable[[], _T]) -> None:
        self._read = read
        self._key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        # Another key than the attribute's name: the descriptor is asked every time, so a kept
        # refusal is raised again instead of being returned as the value.
        self._key = f"_read_once_{name}"

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type) -> _T: ...

    def __get__(self, instance: object | None, owner: type) -> _T | Self:
        if instance is None:
            return self
        kept = instance.__dict__
        if self._key not in kept:
            try:
                kept[self._key] = self._read()
            except ConfigurationError as refusal:
                kept[self._key] = _Refused(refusal)
        value = kept[self._key]
        if isinstance(value, _Refused):
            # A fresh traceback each time: the kept one would grow with every raise.
            raise value.error.with_traceback(None)
        return cast("_T", value)


@dataclass(frozen=True)
class _Refused:
    error: ConfigurationError


class TaskEnvironment(Environment):
    """An `Environment` whose connections are resolved lazily: each is read from Airflow the
    first time the task uses it, then kept (at most once per task). A task that only writes a
    report never asks for the SMTP server, the signing key or the Chorus server; in a real
    Airflow each connection not given as an `AIRFLOW_CONN_*` variable is a request to the
    api-server. A connection that cannot be read raises its French `ConfigurationError` where it
    is used, the same one at each use without reading it again (the run's readiness check reads
    those its treatment needs)."""

    def __init__(self) -> None:
        # Not the dataclass's __init__: it would set every field, connections included.
        object.__setattr__(self, "home", database.home())
        object.__setattr__(self, "workers", env_settings.workers())
        object.__setattr__(self, "production", env_settings.production_mode())

    dsn = _ReadOnce(_dsn)
    _signing = _ReadOnce(_signing)
    ged_access = _ReadOnce(_ged)
    chorus_sftp = _ReadOnce(_chorus_sftp)
    smtp = _ReadOnce(_smtp)
    plateforme = _ReadOnce(_plateforme)
    annuaire = _ReadOnce(_annuaire)
    storage_config = _ReadOnce(_storage)

    @property
    def signing_pkcs12(self) -> bytes | None:
        return self._signing[0]

    @property
    def signing_passphrase(self) -> bytes | None:
        return self._signing[1]

    @property
    def timestamp_url(self) -> str | None:
        return self._signing[2]

    @property
    def signing_problem(self) -> str | None:
        return self._signing[3]

    @property
    def ged_url(self) -> str:
        return self.ged_access.url


#: The user `dag.test()` stamps on every run it creates (Airflow's own sentinel).
DAG_TEST_USER = "dag_test"


def actor(context: Any) -> str:
    """Who did it: the Airflow user who triggered the run, or the technical login.

    A run made by `dag.test()` (the demo day) has no real user: it is stamped with the clerk's
    login `POSTIER_DEMO_LOGIN` when set, as a trigger from the UI would be.
    """
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None)
    if dag_run.run_type in ("scheduled", "backfill") or not user:
        return TECHNICAL_LOGIN
    if user == DAG_TEST_USER:
        return os.environ.get("POSTIER_DEMO_LOGIN") or DAG_TEST_USER
    return str(user)


def external_id(context: Any) -> str:
    return f"{context['dag'].dag_id}/{context['run_id']}"


def workspace_environment() -> Environment:
    """What the Postier pages of the api-server need: the database, the runs, the GED."""
    ged = _ged()
    return Environment(
        dsn=_dsn(),
        home=database.home(),
        ged_url=ged.url,
        ged_access=ged,
        storage_config=_storage(),
    )
