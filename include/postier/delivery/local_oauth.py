"""What the local AFNOR servers (the PA's Flow Service in `local_pa`, the directory in
`local_annuaire`) share: real HTTP on loopback in a thread, an OAuth2 client credentials token
endpoint (RFC 6749 §4.4, not part of the AFNOR documents) issuing Bearer tokens of a chosen
lifetime, the Bearer check, JSON replies, and the URLs a client is configured with.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

TOKEN_PATH = "/oauth/token"

S = TypeVar("S", bound="LocalServer")


@dataclass
class OAuthState:
    client_id: str
    client_secret: str
    token_lifetime: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    #: When set, what the token endpoint answers (HTTP 200) to valid credentials instead of a
    #: token: bytes as they are (not JSON), or a JSON object (without `access_token`, say).
    token_answer: bytes | dict[str, Any] | None = None
    #: Bytes of JSON white space after a good token answer: an answer too large to read.
    token_padding: int = 0
    #: Requests and answers that do not conform to the official document (tests assert none).
    violations: list[str] = field(default_factory=list)
    #: (path, status) of every answer.
    calls: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear_oauth(self) -> None:
        """Forget tokens, calls and violations (the caller holds `lock`)."""
        self.violations.clear()
        self.calls.clear()
        self.tokens.clear()
        self.tokens_issued = 0
        self.token_lifetime = 3600
        self.token_answer = None
        self.token_padding = 0


def explain(errors: Any) -> str:
    """openapi-core's errors with their causes (which field, which rule)."""
    return "; ".join(
        f"{e!r} {e.__cause__!r} {getattr(e.__cause__, 'schema_errors', '')!r}" for e in errors
    )


def body_of(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return b"" if payload is None else json.dumps(payload).encode()


class OAuthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: OAuthState, api: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.state = state
        self.api = api


class OAuthHandler(BaseHTTPRequestHandler):
    """The token endpoint; every other request goes to `_api(method, body)`."""

    server: OAuthServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == TOKEN_PATH:
            self._token(body)
        else:
            self._api("post", body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._api("get", b"")

    def _api(self, method: str, body: bytes) -> None:
        raise NotImplementedError

    def _token(self, body: bytes) -> None:
        state = self.server.state
        expected = base64.b64encode(f"{state.client_id}:{state.client_secret}".encode()).decode()
        form = dict(parse_qsl(body.decode()))
        if self.headers.get("Authorization") != f"Basic {expected}" or (
            form.get("grant_type") != "client_credentials"
        ):
            self._send(401, {"error": "invalid_client"})
            return
        if state.token_answer is not None:
            kind = "text/html" if isinstance(state.token_answer, bytes) else "application/json"
            self._send(200, state.token_answer, content_type=kind)
            return
        token = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[token] = time.monotonic() + state.token_lifetime
            state.tokens_issued += 1
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": state.token_lifetime}
        self._send(200, body_of(answer) + b" " * state.token_padding)

    def _authorized(self) -> bool:
        """The request carries a Bearer token we issued and that has not expired."""
        auth = self.headers.get("Authorization", "")
        with self.server.state.lock:
            expiry = self.server.state.tokens.get(auth.removeprefix("Bearer "))
        return auth.startswith("Bearer ") and expiry is not None and expiry >= time.monotonic()

    def _answer(
        self,
        request: Any,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        *,
        content_type: str = "application/json",
        padding: int = 0,
    ) -> None:
        """Send the answer to `request` (an openapi-core `MockRequest`), checked against the
        official document first: a non-conforming answer is kept in `violations` (a 401 is the
        token endpoint's business, not the document's). `padding`: that many bytes of JSON white
        space after it (an answer too large to read, valid all the same)."""
        from openapi_core.testing import MockResponse

        data = body_of(payload) + b" " * padding
        response = MockResponse(
            data, status_code=status, headers=headers or {}, content_type=content_type
        )
        result = self.server.api.unmarshal_response(request, response)
        if result.errors and status != 401:
            self.server.state.violations.append(
                f"response {status} {request.path}: {explain(result.errors)}"
            )
        self._send(status, data, headers, content_type=content_type)

    def _send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        *,
        content_type: str = "application/json",
    ) -> None:
        with self.server.state.lock:
            self.server.state.calls.append((self.path, status))
        data = body_of(payload)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class LocalServer:
    """A running local server: its URLs, the settings a client is given, start and stop."""

    #: Where the API sits under the server's root (the spec's server path).
    BASE_PATH: ClassVar[str]

    def __init__(self, handler: type[OAuthHandler], state: OAuthState, api: Any) -> None:
        self.state = state
        self._server = OAuthServer(handler, state, api)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def new_secret() -> str:
        return "s3cret-" + secrets.token_hex(8)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        return self.root + self.BASE_PATH

    @property
    def token_url(self) -> str:
        return self.root + TOKEN_PATH

    def env_url(self) -> str:
        """The `POSTIER_…_URL` variable's value for this server."""
        return (
            f"http://{self.state.client_id}:{self.state.client_secret}@"
            f"{self.root.removeprefix('http://')}{self.BASE_PATH}?token_url={self.token_url}"
        )

    def airflow_connection(self) -> str:
        """The `AIRFLOW_CONN_…` variable's value for this server (JSON form)."""
        return json.dumps(
            {
                "conn_type": "http",
                "login": self.state.client_id,
                "password": self.state.client_secret,
                "extra": {"base_url": self.base_url, "token_url": self.token_url},
            }
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serving(server: S) -> Iterator[S]:
    """`server` running for as long as the generator is not closed (a fixture's body)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
