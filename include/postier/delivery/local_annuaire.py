"""A local directory (« annuaire »): the AFNOR Directory Service (XP Z12-013 annex B), real HTTP
on loopback, for the tests and the demo.

Every request and every response is validated against the official OpenAPI document
(`shared/spec/afnor/AFNOR-Directory_Service-1.1.0-openapi.json`, copied unchanged in
`postier/domain/schemas/afnor/`) with openapi-core; a request that does not conform is answered
400 and kept in `violations` (the tests assert that list is empty). An OAuth2 token endpoint
(client credentials, not part of that document) issues the Bearer tokens the API demands.
Entries are directory lines seeded with `add_line`; the next requests can be told to answer an
error status (503, 429 …) with `answer_next`.
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
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

#: The official document, copied unchanged from `shared/spec/afnor/`.
SPEC = (
    Path(__file__).resolve().parents[1]
    / "domain/schemas/afnor/AFNOR-Directory_Service-1.1.0-openapi.json"
)

#: The spec's server (`https://{sub-domain}.{domain}/directory-service`, default variables):
#: requests are validated as if they had reached it.
SPEC_HOST = "https://api.directory.company.com"
BASE_PATH = "/directory-service"
TOKEN_PATH = "/oauth/token"
_LINE_BY_CODE = "/v1/directory-line/code:"


@dataclass
class DirectoryState:
    client_id: str
    client_secret: str
    token_lifetime: int = 3600
    #: Directory lines, as the API returns them (`directoryLinePayloadHistory…`).
    lines: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    #: Statuses the next API requests are answered with, in order.
    script: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    #: (method, path, status) of every API request.
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _explain(errors: Any) -> str:
    """openapi-core's errors with their causes (which field, which rule)."""
    return "; ".join(
        f"{e!r} {e.__cause__!r} {getattr(e.__cause__, 'schema_errors', '')!r}" for e in errors
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

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

    def _token(self, body: bytes) -> None:
        state = self.server.state
        expected = base64.b64encode(f"{state.client_id}:{state.client_secret}".encode()).decode()
        form = dict(parse_qsl(body.decode()))
        if self.headers.get("Authorization") != f"Basic {expected}" or (
            form.get("grant_type") != "client_credentials"
        ):
            self._send(401, {"error": "invalid_client"})
            return
        token = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[token] = time.monotonic() + state.token_lifetime
        self._send(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": state.token_lifetime},
        )

    def _api(self, method: str, body: bytes) -> None:
        from openapi_core.testing import MockRequest

        state = self.server.state
        path = self.path.split("?", 1)[0]
        request = MockRequest(
            SPEC_HOST,
            method,
            path,
            headers=dict(self.headers.items()),
            data=body,
            content_type=self.headers.get("Content-Type") or "application/json",
        )
        auth = self.headers.get("Authorization", "")
        with state.lock:
            expiry = state.tokens.get(auth.removeprefix("Bearer "))
            scripted = state.script.pop(0) if state.script else None
        if not auth.startswith("Bearer ") or expiry is None or expiry < time.monotonic():
            self._answer(request, 401, None)
            return
        result = self.server.api.unmarshal_request(request)
        if result.errors:
            state.violations.append(f"request {method} {path}: {_explain(result.errors)}")
            self._answer(request, 400, None)
            return
        if scripted is not None:
            self._answer(request, scripted, None, {"Retry-After": "0"})
            return
        route = path.removeprefix(BASE_PATH)
        if method == "post" and route == "/v1/directory-line/search":
            self._answer(request, 200, self._search(result.body))
        elif method == "get" and route.startswith(_LINE_BY_CODE):
            code = unquote(route.removeprefix(_LINE_BY_CODE))
            line = next((x for x in state.lines if x["addressingIdentifier"] == code), None)
            self._answer(request, 404, None) if line is None else self._answer(request, 200, line)
        elif method == "get" and route == "/v1/healthcheck":
            self._answer(request, 200, None)
        else:
            self._answer(request, 404, None)

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        filters = body.get("filters") or {}
        wanted = {
            key: (filters.get(key) or {}).get("value")
            for key in ("siren", "siret", "addressingIdentifier")
        }
        with self.server.state.lock:
            lines = list(self.server.state.lines)
        found = [
            line
            for line in lines
            # The spec's operator for these filters is « contains ».
            if all(value is None or value in (line.get(key) or "") for key, value in wanted.items())
        ]
        start, limit = body.get("ignore", 0), body.get("limit", 50)
        return {
            "search": body,
            "totalNumberOfResults": len(found),
            "results": found[start : start + limit],
        }

    def _answer(
        self,
        request: Any,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        from openapi_core.testing import MockResponse

        data = b"" if payload is None else json.dumps(payload).encode()
        headers = {"Content-Language": "fr", **(headers or {})}
        response = MockResponse(
            data, status_code=status, headers=headers, content_type="application/json"
        )
        result = self.server.api.unmarshal_response(request, response)
        if result.errors and status != 401:
            self.server.state.violations.append(
                f"response {status} {request.path}: {_explain(result.errors)}"
            )
        with self.server.state.lock:
            self.server.state.calls.append((request.method, request.path, status))
        self._send(status, payload, headers)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: DirectoryState, api: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.api = api


class LocalDirectory:
    """The running directory; `env_url()`, `airflow_connection()`, `add_line`, `answer_next`."""

    _api: Any = None

    def __init__(self) -> None:
        from openapi_core import OpenAPI

        if LocalDirectory._api is None:
            LocalDirectory._api = OpenAPI.from_file_path(str(SPEC))
        self.state = DirectoryState(
            client_id="postier-annuaire", client_secret="s3cret-" + secrets.token_hex(8)
        )
        self._server = _Server(self.state, LocalDirectory._api)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        return self.root + BASE_PATH

    @property
    def token_url(self) -> str:
        return self.root + TOKEN_PATH

    def env_url(self) -> str:
        """`POSTIER_ANNUAIRE_URL` for this server."""
        return (
            f"http://{self.state.client_id}:{self.state.client_secret}@"
            f"{self.root.removeprefix('http://')}{BASE_PATH}?token_url={self.token_url}"
        )

    def airflow_connection(self) -> str:
        """`AIRFLOW_CONN_POSTIER_ANNUAIRE` for this server (JSON form)."""
        return json.dumps(
            {
                "conn_type": "http",
                "login": self.state.client_id,
                "password": self.state.client_secret,
                "extra": {"base_url": self.base_url, "token_url": self.token_url},
            }
        )

    def add_line(
        self,
        siren: str,
        address: str | None = None,
        *,
        siret: str | None = None,
        routing: str | None = None,
        name: str = "Client",
    ) -> dict[str, Any]:
        """A directory line of the buyer `siren` (its address: `address`, else the SIREN with
        the SIRET and routing code joined by `_`, as the directory's 0225 addresses are)."""
        line: dict[str, Any] = {
            "addressingIdentifier": address or "_".join(p for p in (siren, siret, routing) if p),
            "siren": siren,
            "platform": {"platformType": "WK", "platformStatus": "Enabled"},
            "legalUnit": {"businessName": name, "administrativeStatus": "A"},
        }
        if siret:
            line["siret"] = siret
        if routing:
            line["routingCode"] = {"routingIdentifier": routing}
        with self.state.lock:
            self.state.lines.append(line)
        return line

    def answer_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` API requests with `status` (e.g. 503)."""
        with self.state.lock:
            self.state.script += [status] * times

    def reset(self) -> None:
        with self.state.lock:
            self.state.lines.clear()
            self.state.script.clear()
            self.state.violations.clear()
            self.state.calls.clear()
            self.state.tokens.clear()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def running_directory() -> Iterator[LocalDirectory]:
    directory = LocalDirectory()
    directory.start()
    try:
        yield directory
    finally:
        directory.stop()
