"""The Chorus Pro SFTP server: flows deposited in `in/`, return files read from `out/`.

The server's host key is part of the configuration and checked on every connection (paramiko
`RejectPolicy`): an unknown or different key is refused, never trusted on first use. Uploads go
to a temporary name then are renamed, so Chorus never picks up a half-written flow; uploading the
same name again replaces it, which makes a retried deposit idempotent by flow name.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from postier.errors import ConfigurationError, DeliveryError, ReturnFileError
from postier.service_url import parse_service_url

# paramiko is imported where a connection is made: every task builds an `SftpConfig`, few connect.
if TYPE_CHECKING:
    import paramiko

TEMPORARY_SUFFIX = ".part"


@dataclass(frozen=True)
class SftpConfig:
    """Where and how to reach the Chorus SFTP server; secrets never appear in `repr`."""

    host: str
    #: The server's public key, as in `ssh-keyscan` / known_hosts: `[host] type base64 [comment]`.
    host_key: str
    port: int = 22
    username: str = ""
    password: str | None = field(default=None, repr=False)
    #: Private key text (OpenSSH or PEM), and its passphrase.
    private_key: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)
    remote_in: str = "in"
    remote_out: str = "out"
    timeout: float = 30.0

    @classmethod
    def from_url(
        cls, url: str, host_key: str, *, private_key: str | None = None, **extra: Any
    ) -> SftpConfig:
        """`sftp://login[:password]@host[:port][/base/folder]`: `in` and `out` under the base
        folder when one is given, else in the login's home folder."""
        parts = parse_service_url(
            url,
            name="POSTIER_CHORUS_SFTP_URL",
            schemes=("sftp",),
            expected="serveur Chorus : adresse sftp://login@hôte:port/dossier",
        )
        base = parts.path if parts.path not in ("", "/") else ""
        return cls(
            host=parts.host,
            host_key=host_key,
            port=parts.port or 22,
            username=parts.username or "",
            password=parts.password,
            private_key=private_key,
            remote_in=posixpath.join(base, "in") if base else "in",
            remote_out=posixpath.join(base, "out") if base else "out",
            **extra,
        )

    @classmethod
    def from_connection(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any],
    ) -> SftpConfig:
        """The Airflow connection `postier_chorus_sftp`: extra `host_key` (required, checked
        when connecting), `private_key`, `private_key_passphrase`, `remote_in`, `remote_out`."""
        return cls(
            host=host or "",
            host_key=str(extra.get("host_key") or ""),
            port=int(port or 22),
            username=login or "",
            password=password or None,
            private_key=extra.get("private_key") or None,
            private_key_passphrase=extra.get("private_key_passphrase") or None,
            remote_in=str(extra.get("remote_in") or "in"),
            remote_out=str(extra.get("remote_out") or "out"),
            timeout=float(extra.get("timeout") or 30),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SftpConfig | None:
        """Outside Airflow: `POSTIER_CHORUS_SFTP_URL`, `POSTIER_CHORUS_HOST_KEY` and optionally
        `POSTIER_CHORUS_SFTP_KEY_FILE` (private key file); None when no URL is set."""
        url = environ.get("POSTIER_CHORUS_SFTP_URL")
        if not url:
            return None
        key_file = environ.get("POSTIER_CHORUS_SFTP_KEY_FILE")
        return cls.from_url(
            url,
            environ.get("POSTIER_CHORUS_HOST_KEY", ""),
            private_key=Path(key_file).read_text() if key_file else None,
        )

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def parse_host_key(line: str, server: str = "du serveur Chorus") -> paramiko.PKey:
    """The public key of a known_hosts or `ssh-keyscan` line (host names before it ignored)."""
    import paramiko

    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(("ssh-", "ecdsa-sha2-", "sk-")):
            try:
                return paramiko.PKey.from_type_string(token, base64.b64decode(tokens[i + 1]))
            except (binascii.Error, paramiko.SSHException, ValueError) as error:
                raise ConfigurationError(f"clé d'hôte {server} illisible : {error}") from None
    raise ConfigurationError(
        f"clé d'hôte {server} absente ou illisible (attendu : « ssh-ed25519 AAAA… »)"
    )


def private_key(
    text: str, passphrase: str | None, server: str = "du serveur Chorus"
) -> paramiko.PKey:
    import paramiko

    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise ConfigurationError(
                f"clé privée {server} protégée : phrase secrète absente"
            ) from None
        except (paramiko.SSHException, ValueError):
            continue
    raise ConfigurationError(f"clé privée {server} illisible ou de type non géré")


def _simple_name(name: str) -> str:
    from postier.domain.chorus_returns import printable

    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise DeliveryError(f"nom de fichier refusé sur le serveur Chorus : « {printable(name)} »")
    return name


class ChorusSftp:
    """A session on the Chorus SFTP server, opened on first use; close it, or use it as a
    context manager.

    >>> with ChorusSftp(config) as server:
    ...     server.upload(flow_name, data)
    """

    def __init__(self, config: SftpConfig) -> None:
        self.config = config
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> ChorusSftp:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        import paramiko

        c = self.config
        client = paramiko.SSHClient()
        # No trust on first use: only the configured key is accepted.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = parse_host_key(c.host_key)
        known_as = c.host if c.port == 22 else f"[{c.host}]:{c.port}"
        client.get_host_keys().add(known_as, key.get_name(), key)
        pkey = private_key(c.private_key, c.private_key_passphrase) if c.private_key else None
        try:
            client.connect(
                c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                pkey=pkey,
                timeout=c.timeout,
                banner_timeout=c.timeout,
                auth_timeout=c.timeout,
                channel_timeout=c.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            self._sftp = client.open_sftp()
            channel = self._sftp.get_channel()
            if channel is not None:
                channel.settimeout(c.timeout)
        except paramiko.BadHostKeyException:
            client.close()
            # Not retried: a different key is a configuration change or an attack.
            raise ConfigurationError(
                f"serveur Chorus {c.host}:{c.port} : clé d'hôte différente de celle configurée "
                "(connexion refusée ; vérifiez la clé auprès de l'exploitant)"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise ConfigurationError(
                f"serveur Chorus {c.address} : authentification refusée"
            ) from None
        except (paramiko.SSHException, OSError) as error:
            client.close()
            # The message of these errors never holds the password or the key.
            raise DeliveryError(
                f"serveur Chorus {c.host}:{c.port} injoignable ou refusé : {error}"
            ) from None
        self._client = client

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP channel, connecting on first use (the context manager closes it)."""
        if self._sftp is None:
            self.open()
        assert self._sftp is not None
        return self._sftp

    def upload(self, name: str, data: bytes) -> str:
        """Deposit `data` as `in/<name>`, through a temporary name; the remote path."""
        target = posixpath.join(self.config.remote_in, _simple_name(name))
        temporary = target + TEMPORARY_SUFFIX
        try:
            # confirm=True: the size on the server is checked against what was sent.
            self.sftp.putfo(io.BytesIO(data), temporary, file_size=len(data), confirm=True)
            self._rename(temporary, target)
        except OSError as error:
            raise DeliveryError(f"dépôt du flux {name} sur le serveur Chorus : {error}") from None
        return target

    def list_returns(self) -> list[str]:
        """Names of the return files waiting in `out/`, sorted (files only, no partial uploads).

        A name that is not UTF-8 is kept with `surrogateescape` (paramiko's own listing fails on
        it), so that it can still be read and set aside.
        """
        try:
            entries = self._listdir(self.config.remote_out)
        except OSError as error:
            raise DeliveryError(
                f"lecture du dossier {self.config.remote_out} du serveur Chorus : {error}"
            ) from None
        names = [
            name
            for name, attributes in entries
            if attributes.st_mode is not None
            and (attributes.st_mode & 0o170000) == 0o100000  # regular files only
            and not name.startswith(".")
            and not name.endswith(TEMPORARY_SUFFIX)
        ]
        return sorted(names)

    def _listdir(self, folder: str) -> list[tuple[str, paramiko.SFTPAttributes]]:
        # paramiko's listdir_attr decodes names as strict UTF-8 and raises on a byte 0xff: one
        # such file would block every run. Same requests, names decoded with surrogateescape.
        import paramiko
        from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR

        sftp = self.sftp
        kind, message = sftp._request(CMD_OPENDIR, self._remote(folder))
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        handle = message.get_binary()
        entries = []
        try:
            while True:
                try:
                    kind, message = sftp._request(CMD_READDIR, handle)
                except EOFError:
                    break
                if kind != CMD_NAME:
                    raise paramiko.SFTPError("Expected name response")
                for _ in range(message.get_int()):
                    name = message.get_string().decode("utf-8", "surrogateescape")
                    message.get_string()  # long name
                    attributes = paramiko.SFTPAttributes._from_msg(message)
                    if name not in (".", ".."):
                        entries.append((name, attributes))
        finally:
            sftp._request(CMD_CLOSE, handle)
        return entries

    @staticmethod
    def _remote(path: str) -> bytes:
        # paramiko sends bytes paths as they are: names that are not UTF-8 survive the trip.
        return path.encode("utf-8", "surrogateescape")

    def download(self, name: str) -> bytes:
        """The content of `out/<name>`; a `ReturnFileError` (quarantine) beyond MAX_FILE_SIZE."""
        from postier.domain.chorus_returns import printable
        from postier.domain.limits import MAX_FILE_SIZE

        path = self._remote(posixpath.join(self.config.remote_out, _simple_name(name)))
        try:
            size = self.sftp.stat(path).st_size or 0
            if size > MAX_FILE_SIZE:
                raise ReturnFileError(
                    f"fichier trop volumineux ({size} octets, maximum {MAX_FILE_SIZE}) : "
                    "non téléchargé"
                )
            with self.sftp.open(path, "rb") as remote:
                remote.prefetch(size)
                data = remote.read(MAX_FILE_SIZE + 1)
        except OSError as error:
            raise DeliveryError(
                f"lecture du fichier retour Chorus {printable(name)} : {error}"
            ) from None
        if len(data) > MAX_FILE_SIZE:  # grew since stat
            raise ReturnFileError(f"fichier trop volumineux (plus de {MAX_FILE_SIZE} octets)")
        return data

    def move(self, name: str, folder: str) -> str:
        """Move `out/<name>` into `folder` (under `out/`), created if needed, under the first
        free name of `set_aside_names`: never replaces a file already set aside. The new path."""
        from postier.domain.chorus_returns import printable, set_aside_names

        if ".." in folder.split("/"):
            raise DeliveryError(f"dossier refusé sur le serveur Chorus : « {folder} »")
        source = self._remote(posixpath.join(self.config.remote_out, _simple_name(name)))
        destination_dir = posixpath.join(self.config.remote_out, folder)
        try:
            self._makedirs(destination_dir)
            for candidate in set_aside_names(name):
                destination = posixpath.join(destination_dir, candidate)
                try:
                    # Plain SFTP rename (not posix-rename) refuses an existing target.
                    self.sftp.rename(source, destination)
                    return destination
                except OSError:
                    if not self._exists(destination):
                        raise
        except OSError as error:
            raise DeliveryError(
                f"déplacement du fichier retour Chorus {printable(name)} vers {folder} : {error}"
            ) from None
        raise DeliveryError(f"{folder}/ : aucun nom libre pour {printable(name)}")

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.lstat(path)
        except OSError:
            return False
        return True

    def _rename(self, source: str, target: str) -> None:
        try:
            # OpenSSH's posix-rename replaces the target atomically.
            self.sftp.posix_rename(source, target)
        except OSError:
            # Plain SFTP rename refuses an existing target: remove it first.
            try:
                self.sftp.remove(target)
            except OSError:
                pass
            self.sftp.rename(source, target)

    def _makedirs(self, folder: str) -> None:
        path = ""
        for part in folder.split("/"):
            path = posixpath.join(path, part) if path else (part or "/")
            if part in ("", "."):
                continue
            try:
                self.sftp.stat(path)
            except OSError:
                self.sftp.mkdir(path)
