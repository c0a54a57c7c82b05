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

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from postier.delivery.local_oauth import (
    LocalServer,
    OAuthHandler,
    OAuthServer,
    OAuthState,
    explain,
    serving,
)

#: The official document, copied unchanged from `shared/spec/afnor/`.
SPEC = (
    Path(__file__).resolve().parents[1]
    / "domain/schemas/afnor/AFNOR-Directory_Service-1.1.0-openapi.json"
)

#: The spec's server (`https://{sub-domain}.{domain}/directory-service`, default variables):
#: requests are validated as if they had reached it.
SPEC_HOST = "https://api.directory.company.com"
BASE_PATH = "/directory-service"
_LINE_BY_CODE = "/v1/directory-line/code:"


@dataclass
class DirectoryState(OAuthState):
    #: Directory lines, as the API returns them (`directoryLinePayloadHistory…`).
    lines: list[dict[str, Any]] = field(default_factory=list)
    #: Statuses the next API requests are answered with, in order.
    script: list[int] = field(default_factory=list)


class _Server(OAuthServer):
    state: DirectoryState


class _Handler(OAuthHandler):
    server: _Server

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
        if not self._authorized():
            self._answer(request, 401, None)
            return
        result = self.server.api.unmarshal_request(request)
        if result.errors:
            state.violations.append(f"request {method} {path}: {explain(result.errors)}")
            self._answer(request, 400, None)
            return
        with state.lock:
            scripted = state.script.pop(0) if state.script else None
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
        *,
        content_type: str = "application/json",
        padding: int = 0,
    ) -> None:
        headers = {"Content-Language": "fr", **(headers or {})}
        super()._answer(
            request, status, payload, headers, content_type=content_type, padding=padding
        )


class LocalDirectory(LocalServer):
    """The running directory; `env_url()`, `airflow_connection()`, `add_line`, `answer_next`."""

    BASE_PATH = BASE_PATH
    _api: Any = None
    state: DirectoryState

    def __init__(self) -> None:
        from openapi_core import OpenAPI

        if LocalDirectory._api is None:
            LocalDirectory._api = OpenAPI.from_file_path(str(SPEC))
        state = DirectoryState(client_id="postier-annuaire", client_secret=self.new_secret())
        super().__init__(_Handler, state, LocalDirectory._api)

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
            self.state.clear_oauth()
            self.state.lines.clear()
            self.state.script.clear()


def running_directory() -> Iterator[LocalDirectory]:
    yield from serving(LocalDirectory())
