"""A local OpenSSH SFTP server on a free loopback port, with its own generated keys.

The project starts it itself where a real Chorus Pro SFTP is not at hand: `make demo` deposits its
flows there, and the tests use it as the real server they talk to. `sshd -D -e -f <config>` runs
from a folder holding its host key, a client key pair (public-key login only) and SFTP folders
(each with `in/` and `out/`). As root, `PermitRootLogin prohibit-password`; `StrictModes no`
because the keys live in a temporary folder.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from postier.delivery.chorus_sftp import SftpConfig
from postier.errors import ConfigurationError

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
STARTUP_SECONDS = 15.0


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    #: The server's public host key, as an `ssh-keyscan` line would give it.
    host_key: str
    client_key: str
    base: Path
    process: subprocess.Popen[bytes]

    def folder(self) -> Path:
        """A fresh SFTP folder with `in/` and `out/`."""
        folder = self.base / "sftp" / uuid.uuid4().hex[:10]
        for sub in ("in", "out"):
            (folder / sub).mkdir(parents=True)
        return folder

    def airflow_connection(self, folder: Path) -> str:
        """The `postier_chorus_sftp` connection (JSON, for `AIRFLOW_CONN_…`) on `folder`."""
        return json.dumps(
            {
                "conn_type": "sftp",
                "host": self.host,
                "port": self.port,
                "login": self.user,
                "extra": {
                    "host_key": self.host_key,
                    "private_key": self.client_key,
                    "remote_in": str(folder / "in"),
                    "remote_out": str(folder / "out"),
                },
            }
        )

    def config(self, folder: Path, **overrides: object) -> SftpConfig:
        values: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "host_key": self.host_key,
            "private_key": self.client_key,
            "remote_in": str(folder / "in"),
            "remote_out": str(folder / "out"),
            "timeout": 10.0,
        } | overrides
        return SftpConfig(**values)  # type: ignore[arg-type]

    def storage_environment(
        self, folder: Path, password: str = "", prefix: str = "POSTIER_STORAGE"
    ) -> dict[str, str]:
        """`POSTIER_STORAGE_*` for runs' files stored on `folder` of this server (key login;
        a `password` is only carried in the URL, as a real one would be); `POSTIER_GED_*`…
        with another `prefix`."""
        secret = f":{password}" if password else ""
        return {
            f"{prefix}_URL": f"sftp://{self.user}{secret}@{self.host}:{self.port}{folder}",
            f"{prefix}_HOST_KEY": self.host_key,
            f"{prefix}_KEY_FILE": str(self.base / "client_ed25519"),
        }

    def log(self) -> str:
        path = self.base / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _wait_ready(server: SshServer) -> None:
    """Until the server sends its SSH banner; bounded, and failing with sshd's own log."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ConfigurationError(f"sshd s'est arrêté au démarrage :\n{server.log()}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise ConfigurationError(f"sshd pas prêt après {STARTUP_SECONDS} s :\n{server.log()}")


def start_sshd(base: Path) -> SshServer:
    if not Path(SSHD).exists():
        raise ConfigurationError(
            "serveur OpenSSH absent : installez openssh-server (make system-deps)"
        )
    base.mkdir(parents=True, exist_ok=True)
    host_key, client_key = base / "ssh_host_ed25519_key", base / "client_ed25519"
    _keygen(host_key, "postier-test-host")
    _keygen(client_key, "postier-test-client")
    (base / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:
        # sshd's privilege separation directory (made by the Debian service, not by sshd -D).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    log = (base / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    public = host_key.with_suffix(".pub").read_text().split()
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        host_key=f"{public[0]} {public[1]}",
        client_key=client_key.read_text(),
        base=base,
        process=process,
    )
    try:
        _wait_ready(server)
    except Exception:
        stop_sshd(server)
        raise
    return server


def stop_sshd(server: SshServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
