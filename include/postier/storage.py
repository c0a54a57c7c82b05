"""Where runs' files live: one folder per run under `POSTIER_STORAGE_URL`, through fsspec.

Every task of a run, on whatever host or Celery worker it runs, writes and reads the run's files
(chunk PDFs, print files, ZIPs, Chorus flows, reports) here, never on its own disk only:

- unset: the local folder `POSTIER_HOME` (`.postier/` by default), runs under `<home>/runs/`;
- a local path or `file:///…`: a folder shared by every worker (NFS mount…);
- `sftp://login[:password]@host[:port]/folder`: an SFTP server, whose host key is required
  (`POSTIER_STORAGE_HOST_KEY`, as `ssh-keyscan` prints it) and checked on every connection,
  never trusted on first use; a private key with `POSTIER_STORAGE_KEY_FILE`;
- any other fsspec URL whose package is installed (`s3://bucket/prefix` with s3fs…), with its
  options from the `postier_storage` connection's extra `storage_options`.

The GED (`POSTIER_GED_URL`) and the print-house drop (`POSTIER_EXPORT_URL`) open an `sftp://` URL
the same way (`open_place`), with their own `…_HOST_KEY`, `…_KEY_FILE` and `…_OPTIONS`.

A file is known by its *location*: the storage's public address (no login, password or query)
then its path — `/…/.postier/runs/000012-factures_imprimer/impression.pdf` locally,
`sftp://host:2222/srv/postier/runs/…` over SFTP. The database and the reports hold locations;
a task resolves one against its own storage and refuses any outside it.

Files appear under their final name only once complete (written as `<name>.part`, then
renamed; on a local folder, written unnamed then linked under their name); listings and reads
never show a `.part` file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import posixpath
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

from postier.errors import ConfigurationError, DeliveryError
from postier.service_url import parse_service_url, redacted

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

TEMPORARY_SUFFIX = ".part"
#: Under the storage root: one folder per run.
RUNS = "runs"


@dataclass(frozen=True)
class Place:
    """How a configured place is named: its variables (`<prefix>_URL`, `_HOST_KEY`,
    `_KEY_FILE`, `_OPTIONS`), its Airflow connection, its server in French messages."""

    prefix: str
    connection: str
    server: str


#: Where runs' files live.
RUN_STORAGE = Place("POSTIER_STORAGE", "postier_storage", "du serveur de stockage")
#: The GED (document archive).
GED = Place("POSTIER_GED", "postier_ged", "du serveur de la GED")
#: The print-house drop of `factures_exporter_impression` (no connection).
EXPORT = Place("POSTIER_EXPORT", "", "du serveur de dépôt des exports")


@dataclass(frozen=True)
class StorageConfig:
    """`POSTIER_STORAGE_URL` and what reaching it needs; secrets never in `repr`."""

    #: Empty: the local home folder.
    url: str = field(default="", repr=False)
    #: The SFTP server's public key (`[host] ssh-ed25519 AAAA…`).
    host_key: str = ""
    private_key: str | None = field(default=None, repr=False)
    #: fsspec options (JSON object text), e.g. an S3 endpoint and keys.
    options: str = field(default="", repr=False)
    #: Which place this is (the runs' storage, the GED…), for its variables and messages.
    place: Place = RUN_STORAGE

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, place: Place = RUN_STORAGE
    ) -> StorageConfig:
        """`POSTIER_STORAGE_URL`, `POSTIER_STORAGE_HOST_KEY`, `POSTIER_STORAGE_KEY_FILE`,
        `POSTIER_STORAGE_OPTIONS` (JSON); `POSTIER_GED_…` for `place=GED`…"""
        variable = place.prefix
        key_file = environ.get(f"{variable}_KEY_FILE")
        try:
            private_key = Path(key_file).read_text() if key_file else None
        except OSError:
            raise ConfigurationError(
                f"{variable}_KEY_FILE : clé privée {place.server} introuvable ou illisible"
            ) from None
        return cls(
            url=environ.get(f"{variable}_URL", "").strip(),
            host_key=environ.get(f"{variable}_HOST_KEY", ""),
            private_key=private_key,
            options=environ.get(f"{variable}_OPTIONS", ""),
            place=place,
        )

    @classmethod
    def from_connection(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any],
        place: Place = RUN_STORAGE,
    ) -> StorageConfig:
        """The Airflow connection `postier_storage` (`postier_ged`…): extra `url` (or the host
        field), and `host_key`, `private_key`, `storage_options` (an object). Its login and
        password log in to an `sftp://` URL that names none; refused for another URL."""
        options = extra.get("storage_options") or ""
        url = str(extra.get("url") or host or "").strip()
        return cls(
            url=_with_login(url, login, password, place) if login or password else url,
            host_key=str(extra.get("host_key") or ""),
            private_key=extra.get("private_key") or None,
            options=json.dumps(options) if isinstance(options, dict) else str(options),
            place=place,
        )


def _with_login(url: str, login: str | None, password: str | None, place: Place) -> str:
    """`url` (`sftp://host…`) with the connection's login and password, encoded."""
    where = f"connexion {place.connection or place.prefix}"
    parts = urlsplit(url) if "://" in url else None
    if parts is None or parts.scheme.lower() != "sftp":
        raise ConfigurationError(
            f"{where} : login et mot de passe servent seulement à une adresse sftp:// ; pour "
            "un autre stockage, mettez ses identifiants dans l'extra storage_options"
        )
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"{where} : identifiants à la fois dans l'adresse ({redacted(url)}) et dans les "
            "champs login / mot de passe : gardez-en un seul"
        )
    secret = f":{quote(password, safe='')}" if password else ""
    return urlunsplit(
        parts._replace(netloc=f"{quote(login or '', safe='')}{secret}@{parts.netloc}")
    )


def open_storage(config: StorageConfig, home: Path) -> Storage:
    """The storage `config` names (the home folder when its URL is empty), one per process."""
    # By process: a forked task must not share its parent's SSH connection.
    return _open(config, str(home), os.getpid())


@functools.lru_cache(maxsize=8)
def _open(config: StorageConfig, home: str, pid: int) -> Storage:
    url = config.url
    if not url:
        return Storage(_local_fs(), home, home)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("", "file", "local"):
        path = urlsplit(url).path if scheme else url
        if not path.startswith("/"):
            raise ConfigurationError(
                "POSTIER_STORAGE_URL : chemin absolu attendu pour un dossier partagé"
            )
        return Storage(_local_fs(), path.rstrip("/") or "/", path.rstrip("/") or "/")
    if scheme == "sftp":
        return _sftp_storage(config)
    return _fsspec_storage(config, scheme)


def open_place(config: StorageConfig) -> Storage:
    """Any fsspec URL as given (a folder, `s3://…`); `sftp://` the way the runs' storage opens
    it: the configured host key checked on every connection, never trusted on first use.
    One per process: a task's chunks share its session."""
    return _open_place(config, os.getpid())


@functools.lru_cache(maxsize=8)
def _open_place(config: StorageConfig, pid: int) -> Storage:
    scheme = urlsplit(config.url).scheme.lower() if "://" in config.url else ""
    if scheme == "sftp":
        return _sftp_storage(config)
    if scheme not in ("", "file", "local"):
        # Refused in French when unknown; its locations without login, password or query.
        return _fsspec_storage(config, scheme)
    import fsspec

    fs, root = fsspec.core.url_to_fs(config.url, **_options(config))
    return Storage(fs, str(root).rstrip("/"), config.url.rstrip("/"), place=config.place)


def _local_fs() -> AbstractFileSystem:
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def _options(config: StorageConfig) -> dict[str, Any]:
    if not config.options:
        return {}
    try:
        options = json.loads(config.options)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise ConfigurationError(
            f"options {config.place.server} ({config.place.prefix}_OPTIONS) : objet JSON attendu"
        )
    return options


def _sftp_storage(config: StorageConfig) -> Storage:
    from fsspec.implementations.sftp import SFTPFileSystem

    from postier.delivery.chorus_sftp import parse_host_key, private_key

    place = config.place
    parts = parse_service_url(
        config.url,
        name=f"{place.prefix}_URL",
        schemes=("sftp",),
        expected="adresse sftp://login@hôte:port/dossier",
    )
    if not config.host_key:
        connection = f" ou extra host_key de la connexion {place.connection}"
        raise ConfigurationError(
            f"{place.prefix}_URL ({redacted(config.url)}) : clé d'hôte {place.server} requise "
            f"({place.prefix}_HOST_KEY{connection if place.connection else ''})"
        )
    expected = parse_host_key(config.host_key, place.server)
    port = parts.port or 22
    pkey = private_key(config.private_key, None, place.server) if config.private_key else None
    options = _options(config)

    def connect() -> AbstractFileSystem:
        try:
            fs = SFTPFileSystem(
                parts.host,
                port=port,
                username=parts.username,
                password=parts.password,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=30,
                banner_timeout=30,
                auth_timeout=30,
                host_key_policy=_pinned(expected),
                skip_instance_cache=True,
                **options,
            )
            # Small SFTP requests sent at once: with Nagle's algorithm each file's last write
            # waited for the server's delayed ACK (≈ 40 ms a write on Linux).
            fs.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return fs
        except _HostKeyRefused:
            raise DeliveryError(
                f"clé d'hôte {place.server} {parts.host}:{port} différente de celle configurée "
                f"({place.prefix}_HOST_KEY) : connexion refusée"
            ) from None
        except Exception as error:  # paramiko's errors never hold the password; the URL might
            raise DeliveryError(
                f"connexion impossible ou refusée {place.server} ({redacted(config.url)}) "
                f"({type(error).__name__}) : vérifiez l'adresse, la clé d'hôte et l'accès"
            ) from None

    root = parts.path.rstrip("/") or "/"
    public = f"sftp://{parts.host}" + (f":{port}" if port != 22 else "") + root
    return Storage(connect, root, public, local=False, sftp=True, place=place)


def _sftp_makedirs(ftp: Any, path: str) -> None:
    """`path` and its missing parents on an SFTP server: a `mkdir` tried first, a parent
    made only when the server says it is missing, a `stat` only when `path` may be there."""
    try:
        ftp.mkdir(path)
        return
    except FileNotFoundError:
        parent = posixpath.dirname(path)
        if parent == path:
            raise
        _sftp_makedirs(ftp, parent)
        with contextlib.suppress(OSError):  # else made meanwhile by another worker? checked below
            ftp.mkdir(path)
            return
    except OSError:
        pass  # there already (another worker made it?): checked below
    if not stat.S_ISDIR(ftp.stat(path).st_mode or 0):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")


#: Why a write failed, in French, for the commonest causes.
_REASONS = {
    errno.ENOENT: "dossier introuvable",
    errno.ENOTDIR: "un fichier porte le nom d'un dossier du chemin",
    errno.EACCES: "accès refusé",
    errno.EPERM: "accès refusé",
    errno.ENOSPC: "espace disque insuffisant",
    errno.EDQUOT: "quota dépassé",
}


#: Why a read failed: there the file itself is what may be missing.
_READ_REASONS = {
    **_REASONS,
    errno.ENOENT: "fichier introuvable",
    errno.EISDIR: "un dossier porte le nom du fichier",
}


def _reason(error: Exception, reasons: dict[int, str] = _REASONS) -> str:
    if isinstance(error, OSError):
        if error.errno in reasons:
            return reasons[error.errno]
        said = error.strerror or (str(error.args[0]) if error.args else type(error).__name__)
        return f"refusée par le serveur ou le système (« {said} »)"
    return f"connexion interrompue ou refusée ({type(error).__name__})"


def _write_error(location: str, error: Exception) -> DeliveryError:
    return DeliveryError(
        f"écriture impossible de {location} : {_reason(error)} ; rien n'est validé, "
        "la tâche peut être relancée"
    )


class _HostKeyRefused(Exception):
    """The server showed another host key than the configured one."""


def _pinned(expected: Any) -> Any:
    """paramiko's policy for a host key not in the (empty) known hosts: only the configured
    key is accepted, never one trusted on first use."""
    import paramiko

    class PinnedHostKey(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            if key.get_name() != expected.get_name() or key.asbytes() != expected.asbytes():
                raise _HostKeyRefused(hostname)

    return PinnedHostKey()


def _fsspec_storage(config: StorageConfig, scheme: str) -> Storage:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(config.url, **_options(config))
    except (ImportError, ValueError):
        raise ConfigurationError(
            f"{config.place.prefix}_URL ({redacted(config.url)}) : protocole « {scheme} » non géré "
            "(paquet fsspec correspondant non installé ?)"
        ) from None
    parts = urlsplit(config.url)
    host = parts.hostname or ""
    public = f"{scheme}://{host}" + (f":{parts.port}" if parts.port else "") + parts.path
    return Storage(fs, str(root).rstrip("/"), public.rstrip("/"), local=False, place=config.place)


#: A new file, as `open(path, "wb")` makes it.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
#: A file with no name yet, in the folder opened (Linux ≥ 3.11; ext4, xfs, btrfs, tmpfs…).
_UNNAMED = os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_TMPFILE", 0)
#: What `open(folder, _UNNAMED)` answers where the filesystem or the kernel has no such files.
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
#: What `_link` answers where this filesystem cannot name an unnamed file (linkat(2)): no hard
#: links (EPERM), another mount (EXDEV), refused by the filesystem (EOPNOTSUPP). Anything else
#: (a full disk, a quota, an I/O error…) is this write's failure, not the filesystem's.
_NO_LINK = {errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP}
#: Where an open file descriptor can be linked from (procfs, absent from some containers).
_PROC_FD = "/proc/self/fd"


def _open_in(folder: str, path: str, flags: int) -> int:
    """`path` opened with `flags`, `folder` made when missing (no stat before)."""
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return os.open(path, flags, 0o666)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_file(path: str, data: bytes) -> None:
    """`data` as the file `path`, its folder made when missing: plain system calls (no
    buffered file object for a single write)."""
    fd = _open_in(posixpath.dirname(path), path, _NEW_FILE)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _link(fd: int, path: str) -> None:
    """Give the unnamed file open as `fd` the name `path` (linkat through /proc, which an
    unprivileged process may do; `FileExistsError` when the name is taken)."""
    # An absolute source: linkat ignores its folder descriptor, given only so that Python calls
    # linkat (following the /proc link) rather than link.
    os.link(f"{_PROC_FD}/{fd}", path, src_dir_fd=fd, follow_symlinks=True)


def _cannot_link(error: OSError) -> bool:
    """Whether `_link` failed because unnamed files cannot be named here, for any file."""
    if error.errno == errno.ENOENT:  # no /proc, or this file's folder removed meanwhile
        return not os.path.isdir(_PROC_FD)
    return error.errno in _NO_LINK


def _syncfs(fd: int) -> None:
    """syncfs(2) of the filesystem holding `fd`: its dirty data, inodes and folder entries
    written and its journal committed, in one call (`sync` where there is none)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        os.sync()
        return
    if libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Durability:
    """The files written to one local filesystem since its creation, made durable by
    `wait()`. `start()` begins their writeback in the background (the disk works while the
    caller computes the next documents), so that `wait()` mostly waits for the last ones."""

    def __init__(self, root: str | None, public: str) -> None:
        self._root, self._public = root, public
        self._fd: int | None = None
        self._background: threading.Thread | None = None
        if root is not None:
            try:
                os.makedirs(root, exist_ok=True)
                # Opened before the first write: syncfs reports the filesystem's write-back
                # errors since this open, whoever's flush met them.
                self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as error:
                raise DeliveryError(
                    f"dossier {public} inaccessible : {_reason(error)} ; rien n'est validé, la "
                    "tâche peut être relancée"
                ) from None

    def __del__(self) -> None:
        # A chunk that failed before its sync: its descriptor is not kept.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def start(self) -> None:
        """Begin writing back what is written so far, without waiting (at most one at once)."""
        if self._root is None or (self._background and self._background.is_alive()):
            return
        self._background = threading.Thread(target=self._flush, daemon=True)
        self._background.start()

    def _flush(self) -> None:
        # Its own descriptor: an error it meets stays reported to `wait()`'s.
        with contextlib.suppress(OSError):
            fd = os.open(self._root or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)

    def wait(self) -> None:
        """Return once every file written since the creation is on the disk; a French
        `DeliveryError` when the filesystem says one could not be written."""
        if self._fd is None:
            return
        if self._background is not None:
            self._background.join()
        fd, self._fd = self._fd, None
        try:
            _syncfs(fd)
        except OSError as error:
            raise DeliveryError(
                f"mise en sûreté impossible des fichiers de {self._public} : {_reason(error)} "
                "; rien n'est validé, la tâche peut être relancée"
            ) from None
        finally:
            os.close(fd)


#: How many files a `WriteBatch` holds before writing them.
WRITE_BATCH = 16


class WriteBatch:
    """Files handed over one at a time between other work (a chunk's documents), written
    `WRITE_BATCH` at a time by `write(name, data)`. A file written right after a document's
    render makes its system calls with the CPU's caches cold: 0.10 ms of CPU a file, against
    0.036 ms in batches of 16 (0.031 ms in 32). At most `WRITE_BATCH` files' bytes are held
    (≈ 1 MB of PDFs). `flush()` writes those left; whoever records the files (a commit) flushes
    first, and a failed write is raised by the `add` or `flush` that made it, the next files not
    written. Not `batched` (a remote storage, whose cost is its round trips): each file is
    written when added."""

    def __init__(self, write: Callable[[str, bytes], object], *, batched: bool = True) -> None:
        self._write, self._size = write, WRITE_BATCH if batched else 1
        self._pending: list[tuple[str, bytes]] = []

    def add(self, name: str, data: bytes) -> None:
        self._pending.append((name, data))
        if len(self._pending) >= self._size:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for name, data in pending:
            self._write(name, data)


def _checked(name: str) -> str:
    """`name` if it is a plain relative path (no `..`, `.`, empty part, `\\`, leading `/`)."""
    parts = name.split("/")
    if not name or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise DeliveryError(f"nom de fichier refusé dans le stockage : « {name[:80]} »")
    return name


class Storage:
    """The storage root: resolves locations, holds the run folders."""

    def __init__(
        self,
        fs: AbstractFileSystem | Callable[[], AbstractFileSystem],
        root: str,
        public: str,
        *,
        local: bool = True,
        sftp: bool = False,
        place: Place = RUN_STORAGE,
    ) -> None:
        # A callable connects on first use: a task that writes nothing opens no session.
        self._fs: AbstractFileSystem | None = None if callable(fs) else fs
        self._connect = fs if callable(fs) else None
        #: The root as the filesystem names it; `public`, as locations show it.
        self.root = root
        self.public = public
        self.local = local
        #: An SFTP server: files written with paramiko directly (fewest round trips).
        self.sftp = sftp
        #: Which place this is (the runs' storage, the GED…), for its messages.
        self.place = place
        #: Local files written unnamed, then linked (`_put_unnamed`), until the filesystem refuses.
        self._unnamed = local and hasattr(os, "O_TMPFILE")

    def __repr__(self) -> str:
        return f"Storage({self.public})"

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem; an SFTP session the server closed (idle api-server) is reopened."""
        if self._fs is not None and self._connect is not None:
            transport = self._fs.client.get_transport()
            if transport is None or not transport.is_active():
                self._fs = None
        if self._fs is None:
            assert self._connect is not None
            self._fs = self._connect()
        return self._fs

    def run_folder(self, run_id: int, treatment: str) -> RunFolder:
        """The folder of a new run."""
        return RunFolder(self, f"{RUNS}/{run_id:06d}-{treatment}")

    def folder(self, location: str) -> RunFolder:
        """The run folder at `location` (as recorded in `runs.output_dir`)."""
        return RunFolder(self, self.key(location))

    def key(self, location: str) -> str:
        """The path under the root of `location`; refused when outside this storage."""
        prefix = self.public.rstrip("/") + "/"
        if not location.startswith(prefix):
            raise DeliveryError(
                f"fichier hors du stockage configuré ({self.public}) : {location} — "
                f"{self.place.prefix}_URL doit être le même pour toutes les tâches d'une exécution"
            )
        return _checked(location[len(prefix) :])

    def location(self, key: str) -> str:
        return f"{self.public.rstrip('/')}/{key}"

    def path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{_checked(key)}"

    def read(self, location: str) -> bytes:
        """The content of the file at `location`; `DeliveryError` when absent or unreadable."""
        key = self.key(location)
        if key.endswith(TEMPORARY_SUFFIX):
            raise DeliveryError(f"fichier incomplet : {location}")
        try:
            return bytes(self.fs.cat_file(self.path(key)))
        except OSError as error:
            raise DeliveryError(
                f"lecture impossible de {location} : {_reason(error, _READ_REASONS)}"
            ) from None

    def put(self, path: str, data: bytes, location: str) -> None:
        """Write `data` at `path` (as the filesystem names it), named only once complete: on a
        local folder written unnamed then linked (`_put_unnamed`), elsewhere written under
        `<path>.part` then renamed; its folder made when missing. A French `DeliveryError`
        naming `location` when it cannot be written: then no file appears under its final name.

        No stat before: over SFTP a file costs three round trips (open, the writes pipelined
        with the close that confirms them, the POSIX rename), a new folder two more."""
        if not self.local:
            with self._published(path, location) as handle:
                handle.write(data)
            return
        temporary = path + TEMPORARY_SUFFIX
        try:
            if not (self._unnamed and self._put_unnamed(path, data)):
                _write_file(temporary, data)
                os.replace(temporary, path)
        except BaseException as error:  # an interrupted write (task timeout…) leaves no `.part`
            self._discard(temporary)
            if not isinstance(error, OSError):
                raise
            raise _write_error(location, error) from None

    def _put_unnamed(self, path: str, data: bytes) -> bool:
        """`data` written into an unnamed file of `path`'s folder, then linked as `path`: one
        folder entry made (not a `.part`'s then a rename's), and a write interrupted before
        the link leaves nothing (the file dies with its descriptor). A name already taken
        (a retry writing over its earlier attempt's file): linked as `<path>.part`, then
        renamed over it. False, nothing written, when the filesystem has no unnamed files or
        cannot link them (no hard links, no /proc): this storage then writes `.part` files.
        Any other error (a full disk…) is raised, as a `.part`'s write would raise it."""
        folder = posixpath.dirname(path)
        try:
            fd = _open_in(folder, folder, _UNNAMED)
        except OSError as error:
            if error.errno not in _NO_UNNAMED:
                raise
            self._unnamed = False
            return False
        try:
            _write_all(fd, data)
            try:
                _link(fd, path)
                return True
            except FileExistsError:
                pass
            except OSError as error:
                if not _cannot_link(error):
                    raise
                self._unnamed = False
                return False
            temporary = path + TEMPORARY_SUFFIX
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)  # left by an older version's interrupted write
            _link(fd, temporary)
            os.replace(temporary, path)
            return True
        finally:
            os.close(fd)

    def upload(self, path: str, source: IO[bytes], location: str) -> None:
        """Write what is left to read of `source` at `path`, as `put` does."""
        with self._published(path, location) as handle:
            shutil.copyfileobj(source, handle, 1 << 20)

    @contextlib.contextmanager
    def writer(self, path: str, location: str) -> Iterator[IO[bytes]]:
        """A file to write `path` (as the filesystem names it) into, streamed; published when
        the block ends without error, as `put` publishes, and removed otherwise. Remote storages
        get it from a local temporary file (memory flat). The file can be read back in the
        block (`seek(0)`): what was written, e.g. to copy it elsewhere without a download."""
        if self.local:
            with self._published(path, location) as handle:
                yield handle
            return
        with tempfile.TemporaryFile() as spool:
            try:
                yield spool
            except OSError as error:  # the local spool's disk: full…
                raise _write_error(location, error) from None
            spool.seek(0)
            self.upload(path, spool, location)

    @contextlib.contextmanager
    def _published(self, path: str, location: str) -> Iterator[IO[bytes]]:
        """`<path>.part` opened to write (its folder made when missing), renamed `path` when
        the block ends without error. Whatever fails, the `.part` is removed; a failure of the
        storage (open, write, close, rename) is a French `DeliveryError` naming `location`, an
        error of the caller's own block is raised as it is."""
        temporary = path + TEMPORARY_SUFFIX
        # Reached before the write: a refused connection keeps its own message (the host key…)
        # and is not tried a second time to discard a `.part` never begun.
        fs = self.fs
        own: BaseException | None = None
        try:
            with self._opened(fs, temporary) as handle:
                try:
                    yield handle
                except OSError:
                    raise  # writing into the file failed: the storage's failure
                except BaseException as error:
                    own = error
                    raise
            if self.local:
                os.replace(temporary, path)
            elif self.sftp:
                fs.ftp.posix_rename(temporary, path)
            else:
                fs.mv(temporary, path)
        except BaseException as error:
            self._discard(temporary)
            if error is own or not isinstance(error, Exception):
                raise
            raise _write_error(location, error) from None

    def _opened(self, fs: AbstractFileSystem, temporary: str) -> IO[bytes]:
        """`temporary` opened to write, its folder made when missing."""
        folder = posixpath.dirname(temporary)
        if self.local:
            try:
                return open(temporary, "w+b")  # noqa: SIM115 (closed by the caller)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                return open(temporary, "w+b")  # noqa: SIM115
        if self.sftp:
            ftp = fs.ftp
            try:
                remote = ftp.open(temporary, "wb")
            except FileNotFoundError:
                _sftp_makedirs(ftp, folder)
                remote = ftp.open(temporary, "wb")
            # Writes not awaited one by one; the close waits for every one's answer.
            remote.set_pipelined(True)
            return cast("IO[bytes]", remote)
        fs.makedirs(folder, exist_ok=True)
        return cast("IO[bytes]", fs.open(temporary, "wb"))

    def durability(self) -> Durability:
        """What makes the files written from now on durable, with their folder entries, before
        a caller records them (a commit): on a local or mounted folder, `syncfs` of its
        filesystem (one call whatever the number of files). Over SFTP the server's reply to
        each file's close and rename is what there is (the protocol has no fsync); an object
        store holds an object once its write returned: nothing more to wait for."""
        return Durability(self.root if self.local else None, self.public)

    def _discard(self, path: str) -> None:
        """Remove a `.part` left by a failed write, when the storage still answers."""
        with contextlib.suppress(Exception):
            if self.local:
                os.unlink(path)
            elif self.sftp:
                self.fs.ftp.remove(path)
            else:
                self.fs.rm_file(path)

    def exists(self, location: str) -> bool:
        try:
            return bool(self.fs.isfile(self.path(self.key(location))))
        except (OSError, DeliveryError):
            return False


class RunFolder:
    """One run's folder; files named by their path relative to it (`factures/F1.pdf`)."""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = _checked(key)
        self.location = storage.location(self.key)

    def __repr__(self) -> str:
        return f"RunFolder({self.location})"

    def _path(self, name: str) -> str:
        return self.storage.path(f"{self.key}/{_checked(name)}")

    def file_location(self, name: str) -> str:
        return self.storage.location(f"{self.key}/{_checked(name)}")

    def write(self, name: str, data: bytes) -> str:
        """Write `data` as `name`, named only once complete (see `Storage.put`); its location."""
        location = self.file_location(name)
        self.storage.put(self._path(name), data, location)
        return location

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[IO[bytes]]:
        """A file to write `name` into, streamed (see `Storage.writer`)."""
        with self.storage.writer(self._path(name), self.file_location(name)) as handle:
            yield handle

    def read(self, name: str) -> bytes:
        return self.storage.read(self.file_location(name))

    def open(self, name: str) -> IO[bytes]:
        """`name` opened for reading (a finished file of this folder only: see `file`)."""
        return self.storage.fs.open(self._path(name), "rb")

    def files(self) -> dict[str, int]:
        """Every finished file of the folder (relative name → size); no `.part`, no link."""
        fs = self.storage.fs
        base = self.storage.path(self.key)
        try:
            found = fs.find(base, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        files: dict[str, int] = {}
        prefix = base.rstrip("/") + "/"
        for path, info in found.items():
            path = str(path)
            if info.get("type") != "file" or info.get("islink") or not path.startswith(prefix):
                continue
            name = path[len(prefix) :]
            if name.endswith(TEMPORARY_SUFFIX):
                continue
            files[name] = int(info.get("size") or 0)
        if self.storage.local:
            # A link inside the folder must not reach a file outside it.
            root = os.path.realpath(base)
            files = {
                n: s
                for n, s in files.items()
                if os.path.realpath(prefix + n).startswith(root + os.sep)
            }
        return files

    def file(self, name: str) -> str | None:
        """`name` if it is a finished file of this folder, else None (`..`, absolute paths,
        `.part`, links, anything its folder's listing does not show as a file)."""
        try:
            path = self._path(name)
        except DeliveryError:
            return None
        if name.endswith(TEMPORARY_SUFFIX):
            return None
        try:
            # Listed, not stat-ed: a listing describes links as links (lstat) on SFTP too.
            entries = self.storage.fs.ls(posixpath.dirname(path), detail=True)
        except OSError:
            return None
        for entry in entries:
            if str(entry["name"]).rstrip("/") != path:
                continue
            if entry.get("type") != "file" or entry.get("islink"):
                return None
            if self.storage.local:
                root = os.path.realpath(self.storage.path(self.key))
                if not os.path.realpath(path).startswith(root + os.sep):
                    return None
            return name
        return None
