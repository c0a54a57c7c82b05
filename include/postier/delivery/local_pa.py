"""A local Plateforme Agréée: the AFNOR Flow Service (XP Z12-013 annex A), real HTTP on loopback.

The project starts it itself where no real PA is at hand (as the local sshd stands for Chorus
Pro): `make demo` deposits its `plateforme` invoices there, and the tests use it as the real
server they talk to. Every request and every response of the Flow API is validated against the
official OpenAPI document (`spec/afnor/AFNOR-Flow_Service-1.1.0-openapi.json`, copied unchanged in
`schemas/afnor/` beside the Chorus schemas) with openapi-core, but for a file generated while it
is sent (`add_lifecycle_flow(generated=…)`, too large to hold); a request that does not conform is
answered 400 and kept in `violations`, and the tests assert that list is empty. The OAuth2 token
endpoint (RFC 6749 client credentials, not part of that document) issues Bearer tokens with a
chosen lifetime. The server stores the flows it accepts and can be told to answer the next
requests with 429/503 (with `Retry-After`), 400/413/422, a body of the test's, or to accept a
flow and then never answer (the client times out: an unknown outcome) or answer it with more
than a client reads (valid JSON, padded with white space).

It also plays the buyer's side: told which statuses an invoice it received reaches
(`LocalPlatform.lifecycle`), it produces one lifecycle flow per status (flowType
`CustomerInvoiceLC`, a CDAR D22B message valid against the official schema), found by
`POST /v1/flows/search` (`updatedAfter`, oldest first) and downloaded by `GET /v1/flows/{flowId}`.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from postier.delivery.local_oauth import (
    LocalServer,
    OAuthHandler,
    OAuthServer,
    OAuthState,
    serving,
)
from postier.domain.lifecycle import PARIS, LifecycleStatus, write_lifecycle

#: The official document, copied unchanged from `spec/afnor/` beside the Chorus schemas.
SPEC = (
    Path(__file__).resolve().parents[1]
    / "domain/schemas/afnor/AFNOR-Flow_Service-1.1.0-openapi.json"
)

#: The spec's server (`https://{sub-domain}.{domain}/flow-service`, default variables): requests
#: are validated as if they had reached it.
SPEC_HOST = "https://api.flow.company.com"
BASE_PATH = "/flow-service"


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
    #: This JSON body instead of an `Error` (checked against the document like any answer).
    body: Any = None
    #: Accept the flow and answer as usual, then this many bytes of JSON white space (a deposit
    #: answer too large to read, after the PA kept the file).
    padding: int = 0


@dataclass
class StoredFlow:
    flow_id: str
    info: dict[str, Any]
    data: bytes
    submitted_at: str
    flow_type: str = "CustomerInvoice"
    direction: str = "Out"
    updated_at: str = ""
    #: When set, the file is this many bytes generated while sent (see `add_lifecycle_flow`).
    generated: int = 0

    @property
    def updated(self) -> str:
        return self.updated_at or self.submitted_at


@dataclass
class PlatformState(OAuthState):
    #: Seconds every deposit takes before it is answered (a slow PA).
    deposit_delay: float = 0.0
    flows: list[StoredFlow] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    #: Bytes of a generated file sent before the client stopped reading (or all), per flowId.
    sent: dict[str, int] = field(default_factory=dict)


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: str | datetime) -> datetime:
    """A date-time of the API (openapi-core hands the request's ones already parsed)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class _Handler(OAuthHandler):
    server: _Server

    # -- Flow Service ---------------------------------------------------------------------------

    def _api(self, method: str, body: bytes) -> None:
        state = self.server.state
        path, _, query = self.path.partition("?")
        request = MockRequest(
            SPEC_HOST,
            method,
            path,
            args=dict(urllib.parse.parse_qsl(query)),
            headers=dict(self.headers.items()),
            data=body,
            content_type=self.headers.get("Content-Type") or "application/json",
        )
        route = path.removeprefix(BASE_PATH)
        if not self._authorized():
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
        if scripted is not None and not scripted.hang and not scripted.padding:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            error = {"errorCode": scripted.code or f"E{scripted.status}"}
            if scripted.message:
                error["errorMessage"] = scripted.message
            answer = error if scripted.body is None else scripted.body
            self._answer(request, scripted.status, answer, headers)
            return
        if method == "post" and route == "/v1/flows":
            time.sleep(state.deposit_delay)
            flow = self._store(payload)
            if scripted is not None and scripted.hang:
                time.sleep(scripted.hang)
                self.close_connection = True
                return
            self._answer(
                request,
                202,
                {**flow.info, "flowId": flow.flow_id, "submittedAt": flow.submitted_at},
                padding=scripted.padding if scripted is not None else 0,
            )
        elif method == "post" and route == "/v1/flows/search":
            self._answer(request, 200, self._search(payload))
        elif method == "get" and route == "/v1/healthcheck":
            self._answer(request, 200, None)
        elif method == "get" and route.startswith("/v1/flows/"):
            self._download(request, urllib.parse.unquote(route.removeprefix("/v1/flows/")))
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
        after = _time(where["updatedAfter"]) if "updatedAfter" in where else None
        with self.server.state.lock:
            flows = sorted(self.server.state.flows, key=lambda f: _time(f.updated))
        results = []
        for flow in flows:
            if "trackingId" in where and flow.info.get("trackingId") != where["trackingId"]:
                continue
            if "flowType" in where and flow.flow_type not in where["flowType"]:
                continue
            if "flowDirection" in where and flow.direction not in where["flowDirection"]:
                continue
            # The API paginates by `updatedAfter`: strictly after, oldest first.
            if after is not None and _time(flow.updated) <= after:
                continue
            results.append(_metadata(flow))
        limit = body.get("limit", 25)
        filters = {k: _stamp(v) if isinstance(v, datetime) else v for k, v in where.items()}
        return {"limit": limit, "filters": filters, "results": results[:limit]}

    def _download(self, request: MockRequest, flow_id: str) -> None:
        with self.server.state.lock:
            found = [f for f in self.server.state.flows if f.flow_id == flow_id]
        if not found:
            self._answer(request, 404, {"errorCode": "NOT_FOUND", "errorMessage": "flux inconnu"})
            return
        flow = found[0]
        if request.parameters.query.get("docType", "Metadata") == "Metadata":
            self._answer(request, 200, _metadata(flow))
            return
        if flow.generated:
            self._generate(flow)
            return
        name = flow.info.get("name") or flow.flow_id
        self._answer(
            request,
            200,
            flow.data,
            {"Content-Disposition": f"attachment;filename={name}"},
            content_type="application/octet-stream",
        )

    def _generate(self, flow: StoredFlow) -> None:
        """`flow.generated` bytes without Content-Length (the body ends with the connection),
        sent until the client stops reading; too large to hold, so not checked against the
        document (an octet stream of the same kind as every download's)."""
        state = self.server.state
        with state.lock:
            state.calls.append((self.path, 200))
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk, sent = b"<" * 65536, 0
        try:
            while sent < flow.generated:
                self.wfile.write(chunk[: flow.generated - sent])
                sent += min(len(chunk), flow.generated - sent)
        except OSError:  # the client closed the connection: it stopped reading
            pass
        with state.lock:
            state.sent[flow.flow_id] = sent


def _metadata(flow: StoredFlow) -> dict[str, Any]:
    """A flow as `Flow` of the API describes it."""
    meta: dict[str, Any] = {
        "flowId": flow.flow_id,
        "submittedAt": flow.submitted_at,
        "updatedAt": flow.updated,
        "flowType": flow.flow_type,
        "flowDirection": flow.direction,
        "flowSyntax": flow.info["flowSyntax"],
        "processingRule": flow.info.get("processingRule", "B2B"),
        "acknowledgement": {"status": "Ok"},
    }
    if flow.info.get("trackingId"):
        meta["trackingId"] = flow.info["trackingId"]
    return meta


def invoice_number(flow: StoredFlow) -> str:
    """The number of the invoice a deposited flow carries, read as a PA reads it: from the
    Factur-X XML (`ExchangedDocument/ID`); else the file name without its extension."""
    import io

    import facturx
    from lxml import etree

    try:
        _, xml = facturx.get_xml_from_pdf(io.BytesIO(flow.data), check_xsd=False)
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
        found = root.findtext(
            "{*}ExchangedDocument/{*}ID",
        )
    except Exception:  # noqa: BLE001 - not a Factur-X: the name is all there is
        found = None
    return (found or "").strip() or str(flow.info.get("name") or "").rsplit(".", 1)[0]


class _Server(OAuthServer):
    state: PlatformState


class LocalPlatform(LocalServer):
    """The running server; `base_url`, `token_url`, and the knobs of `state`."""

    BASE_PATH = BASE_PATH
    _api: OpenAPI | None = None
    state: PlatformState

    def __init__(self, client_id: str = "postier-test") -> None:
        if LocalPlatform._api is None:
            LocalPlatform._api = OpenAPI.from_file_path(str(SPEC))
        state = PlatformState(client_id=client_id, client_secret=self.new_secret())
        super().__init__(_Handler, state, LocalPlatform._api)

    def answer_next(self, path: str, status: int, **kwargs: Any) -> None:
        self.state.script.append(Scripted(path, status, **kwargs))

    def lifecycle(
        self,
        number: str,
        *statuses: str | tuple[str, str],
        at: datetime | None = None,
        every: timedelta = timedelta(minutes=1),
    ) -> list[str]:
        """The buyer's side: invoice `number`, which this PA received, reaches `statuses` in
        order (a code, or a code and its reason: ``("210", "montant contesté")``), `every` apart
        (a minute by default), the last at `at` (now by default). One lifecycle flow per status;
        their ids."""
        with self.state.lock:
            received = [f for f in self.state.flows if f.flow_type == "CustomerInvoice"]
        if not any(invoice_number(f) == number for f in received):
            raise LookupError(f"invoice {number} was never deposited on this PA")
        last = (at or datetime.now(PARIS)).replace(microsecond=0)
        ids = []
        for i, item in enumerate(statuses):
            code, reason = (item, "") if isinstance(item, str) else item
            when = last - every * (len(statuses) - 1 - i)
            data = write_lifecycle(
                [LifecycleStatus(number, code, when, reason)], doc_id=f"LC-{uuid.uuid4().hex[:12]}"
            )
            ids.append(self.add_lifecycle_flow(data, name=f"{number}-{code}.xml"))
        return ids

    def add_lifecycle_flow(
        self,
        data: bytes,
        *,
        name: str = "cycle-de-vie.xml",
        updated_at: datetime | None = None,
        generated: int = 0,
    ) -> str:
        """A lifecycle flow with these bytes, whatever they are (tests: hostile or foreign
        files), or with `generated`, a file of that many bytes made while it is sent (larger
        than anyone should hold); its id."""
        now = _now()
        flow = StoredFlow(
            str(uuid.uuid4()),
            {"name": name, "flowSyntax": "CDAR", "processingRule": "B2B"},
            data,
            now,
            flow_type="CustomerInvoiceLC",
            direction="In",
            updated_at=_stamp(updated_at) if updated_at else now,
            generated=generated,
        )
        with self.state.lock:
            self.state.flows.append(flow)
        return flow.flow_id

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear_oauth()
            self.state.flows.clear()
            self.state.script.clear()
            self.state.sent.clear()
            self.state.deposit_delay = 0.0


def running_platform() -> Iterator[LocalPlatform]:
    yield from serving(LocalPlatform())
