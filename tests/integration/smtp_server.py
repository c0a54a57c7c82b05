"""A real SMTP server for the tests (aiosmtpd) on a free loopback port, that keeps what it gets.

It can be stopped and started again on the same port (server down, then up), refuse chosen
recipients for good (550), require a login, and answer late (`answer_delay`: the message is
stored, then the 250 comes after that many seconds). Messages are parsed back with `email`, and
keep when they arrived.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    #: When the server had the whole message (`time.monotonic`).
    at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    answer_delay: float = 0.0

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 Adresse inconnue"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServer:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.host, self.port = "127.0.0.1", _free_port()
        self.handler = _Handler()
        self.credentials = credentials
        self._controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.credentials is not None
        ok = ok and (data.login.decode(), data.password.decode()) == self.credentials
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.credentials:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = Controller(self.handler, hostname=self.host, port=self.port, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, **query: str) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"smtp://{auth}{self.host}:{self.port}" + (f"?{params}" if params else "")

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def refuse(self, address: str) -> None:
        self.handler.refused.add(address)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A started server with an empty mailbox, its own port, stopped afterwards."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
