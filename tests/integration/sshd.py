"""Fixtures over the project's local OpenSSH server (`postier.delivery.local_sftp`): `sshd`
(the server, once per session) and `chorus_sftp` (an `SftpConfig` on a fresh folder). Import both
where needed:

    from integration.sshd import chorus_sftp, sshd  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postier.delivery.chorus_sftp import SftpConfig
from postier.delivery.local_sftp import SshServer, start_sshd, stop_sshd

__all__ = ["SshServer", "chorus_sftp", "sshd"]


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    base = Path(tempfile.mkdtemp(prefix="postier-test-sshd-"))
    server = start_sshd(base)
    yield server
    stop_sshd(server)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def chorus_sftp(sshd: SshServer) -> SftpConfig:
    """An `SftpConfig` on a fresh folder of the session's sshd."""
    return sshd.config(sshd.folder())
