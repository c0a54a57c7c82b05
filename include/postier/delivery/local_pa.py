"""A local Plateforme Agréée: the AFNOR Flow Service (XP Z12-013 annex A), real HTTP on loopback.

The project starts it itself where no real PA is at hand (as the local sshd stands for Chorus
Pro): `make demo` deposits its `plateforme` invoices there, and the tests use it as the real
server they talk to. Every request and every response of the Flow API is validated against the
official OpenAPI document (`spec/afnor/AFNOR-Flow_Service-1.1.0-openapi.json`, copied unchanged in
`schemas/afnor/` beside the Chorus schemas) with openapi-core; a request that does not conform is
answered 400 and kept in `violations`, and the tests assert that list is empty. The OAuth2 token
endpoint (RFC 6749 client credentials, not part of that document) issues Bearer tokens with a
chosen lifetime. The server stores the flows it accepts and can be told to answer the next
requests with 429/503 (with `Retry-After`), 400/413/422, or to accept a flow and then never
answer (the client times out: an unknown outcome).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

#: The official document, copied unchanged from `spec/afnor/` beside the Chorus schemas.
SPEC = (
    Path(__file__).resolve().parents[1]
    / "domain/schemas/afnor/AFNOR-Flow_Service-1.1.0-openapi.json"
)

#: The spec's server (`https://{sub-domain}.{domain}/flow-service`, default variables): requests
#: are validated as if they had reached it.
SPEC_HOST = "https://api.flow.company.com"
BASE_PATH = "/flow-service"
TOKEN_PATH = "/oauth/token"


@dataclass
class Scripted:
    """One scripted answer to the next request on `path`."""

    path: str
    status: int
    retry_after: str | None = None
    code: str = ""
    message: str = ""
    #: Accept the flow, then do not answer for this many seconds (after a deposit).
    hang: float = 0.0


@dataclass
class StoredFlow:
    flow_id: str
    info: dict[str, Any]
    data: bytes
    submitted_at: str


@dataclass
class PlatformState:
    client_id: str
    client_secret: str
    token_lifetime: int = 3600
    #: Seconds every deposit takes before it is answered (a slow PA).
    deposit_delay: float = 0.0
    flows: list[StoredFlow] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    script: list[Scripted] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == TOKEN_PATH:
            self._token(body)
            return
        self._api("post", body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._api("get", b"")

    # -- OAuth2 -------------------------------------------------------------------------------

    def _token(self, body: bytes) -> None:
        state = self.server.state
        expected = base64.b64encode(f"{state.client_id}:{state.client_secret}".encode()).decode()
        form = dict(p.split("=", 1) for p in body.decode().split("&") if "=" in p)
        if self.headers.get("Authorization") != f"Basic {expected}" or form.get("grant_type") != (
            "client_credentials"
        ):
            self._send(401, {"error": "invalid_client"})
            return
        token = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[token] = time.monotonic() + state.token_lifetime
            state.tokens_issued += 1
        self._send(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": state.token_lifetime},
        )

    # -- Flow Service ---------------------------------------------------------------------------

    def _api(self, method: str, body: bytes) -> None:
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
        route = path.removeprefix(BASE_PATH)
        auth = self.headers.get("Authorization", "")
        with state.lock:
            expiry = state.tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or expiry is None or expiry < time.monotonic():
            self._answer(request, 401, {"errorCode": "UNAUTHORIZED", "errorMessage": "token"})
            return
        result = self.server.api.unmarshal_request(request)
        if result.errors:
            detail = "; ".join(repr(e) + repr(getattr(e, "__cause__", "")) for e in result.errors)
            state.violations.append(f"request {method} {route}: {detail}")
            self._answer(request, 400, {"errorCode": "INVALID_REQUEST", "errorMessage": detail})
            return
        payload: dict[str, Any] = result.body or {}
        scripted = self._scripted(route)
        if scripted is not None and not scripted.hang:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            error = {"errorCode": scripted.code or f"E{scripted.status}"}
            if scripted.message:
                error["errorMessage"] = scripted.message
            self._answer(request, scripted.status, error, headers)
            return
        if method == "post" and route == "/v1/flows":
            time.sleep(state.deposit_delay)
            flow = self._store(payload)
            if scripted is not None:
                time.sleep(scripted.hang)
                self.close_connection = True
                return
            self._answer(
                request,
                202,
                {**flow.info, "flowId": flow.flow_id, "submittedAt": flow.submitted_at},
            )
        elif method == "post" and route == "/v1/flows/search":
            self._answer(request, 200, self._search(payload))
        elif method == "get" and route == "/v1/healthcheck":
            self._answer(request, 200, None)
        else:
            self._answer(request, 404, {"errorCode": "NOT_FOUND"})

    def _scripted(self, route: str) -> Scripted | None:
        state = self.server.state
        with state.lock:
            for i, item in enumerate(state.script):
                if item.path == route:
                    return state.script.pop(i)
        return None

    def _store(self, body: dict[str, Any]) -> StoredFlow:
        info, data = dict(body["flowInfo"]), bytes(body["file"])
        if "sha256" not in info:
            info["sha256"] = hashlib.sha256(data).hexdigest()
        flow = StoredFlow(str(uuid.uuid4()), info, data, _now())
        with self.server.state.lock:
            self.server.state.flows.append(flow)
        return flow

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        where = body["where"]
        results = []
        for flow in list(self.server.state.flows):
            if "trackingId" in where and flow.info.get("trackingId") != where["trackingId"]:
                continue
            results.append(
                {
                    "flowId": flow.flow_id,
                    "trackingId": flow.info.get("trackingId"),
                    "submittedAt": flow.submitted_at,
                    "updatedAt": flow.submitted_at,
                    "flowType": "CustomerInvoice",
                    "flowDirection": "Out",
                    "flowSyntax": flow.info["flowSyntax"],
                    "processingRule": flow.info.get("processingRule", "B2B"),
                    "acknowledgement": {"status": "Ok"},
                }
            )
        limit = body.get("limit", 25)
        return {"limit": limit, "filters": where, "results": results[:limit]}

    def _answer(
        self,
        request: MockRequest,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        response = MockResponse(data, status_code=status, headers=headers or {})
        result = self.server.api.unmarshal_response(request, response)
        if result.errors and status != 401:
            self.server.state.violations.append(
                f"response {status} {request.path}: {result.errors!r}"
            )
        self._send(status, payload, headers)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.server.state.calls.append((self.path, status))
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

    def __init__(self, state: PlatformState, api: OpenAPI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.api = api


class LocalPlatform:
    """The running server; `base_url`, `token_url`, and the knobs of `state`."""

    _api: OpenAPI | None = None

    def __init__(self) -> None:
        if LocalPlatform._api is None:
            LocalPlatform._api = OpenAPI.from_file_path(str(SPEC))
        self.state = PlatformState(
            client_id="postier-test", client_secret="s3cret-" + secrets.token_hex(8)
        )
        self._server = _Server(self.state, LocalPlatform._api)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.root + BASE_PATH

    @property
    def token_url(self) -> str:
        return self.root + TOKEN_PATH

    def env_url(self) -> str:
        """`POSTIER_PLATEFORME_URL` for this server."""
        return (
            f"http://{self.state.client_id}:{self.state.client_secret}@"
            f"{self.root.removeprefix('http://')}{BASE_PATH}?token_url={self.token_url}"
        )

    def airflow_connection(self) -> str:
        return json.dumps(
            {
                "conn_type": "http",
                "login": self.state.client_id,
                "password": self.state.client_secret,
                "extra": {"base_url": self.base_url, "token_url": self.token_url},
            }
        )

    def answer_next(self, path: str, status: int, **kwargs: Any) -> None:
        self.state.script.append(Scripted(path, status, **kwargs))

    def reset(self) -> None:
        with self.state.lock:
            self.state.flows.clear()
            self.state.script.clear()
            self.state.violations.clear()
            self.state.calls.clear()
            self.state.tokens.clear()
            self.state.tokens_issued = 0
            self.state.token_lifetime = 3600
            self.state.deposit_delay = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def running_platform() -> Iterator[LocalPlatform]:
    platform = LocalPlatform()
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()
