"""Fixtures of the integration tests: the real SFTP server (`sshd`, `chorus_sftp`)."""

from __future__ import annotations

from integration.sshd import chorus_sftp, sshd

__all__ = ["chorus_sftp", "sshd"]
