"""Our Plateforme Agréée (PA), through the AFNOR XP Z12-013 Flow Service API (annex A).

`POST /v1/flows` deposits one invoice file as a flow (multipart: `flowInfo` JSON + the file);
`POST /v1/flows/search` finds a flow by its `trackingId` after an unknown outcome, so a retry never
deposits twice. Authentication: OAuth2 client credentials (RFC 6749 §4.4), the Bearer token cached
per process until shortly before it expires, fetched again once when the PA answers 401.

429 and 503 are retried after the PA's `Retry-After` (seconds or HTTP date), up to a bound;
400/413/422 are refusals of this very file (`FlowRefused`, with the PA's code and message);
anything else that prevents the deposit is `PlatformUnavailable` (nothing left, retry later);
a timeout once the file was sent, or an answer to it that is not JSON or has no `flowId`, is
`FlowOutcomeUnknown` (search before depositing again). A download past the size asked for is
`FlowTooLarge`, read no further; any other answer (JSON, error, token) is read no further than
`MAX_FILE_SIZE` bytes either: past it, `PlatformUnavailable` (`FlowOutcomeUnknown` for the answer
to a deposit). A search answer whose `results` are not objects is `PlatformUnavailable`.

The client secret and the token never appear in `repr`, messages or logs: errors name the PA by
its scheme and host only (`postier.service_url.redacted`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from postier.domain.limits import MAX_FILE_SIZE
from postier.errors import ConfigurationError, DeliveryError
from postier.service_url import parse_service_url, redacted

log = logging.getLogger(__name__)

#: What we deposit: a Factur-X (PDF/A-3 with its CII XML), EN 16931 with the French CIUS rules.
FLOW_SYNTAX = "Factur-X"
FLOW_PROFILE = "CIUS"
PROCESSING_RULE = "B2B"

#: HTTP statuses whose answer is « this file is refused » (AFNOR Flow Service error responses).
REFUSAL_STATUSES = {400: "requête refusée", 413: "fichier trop volumineux", 422: "flux invalide"}
RETRY_STATUSES = frozenset({429, 503})

#: Seconds before its stated expiry at which a cached token is renewed.
TOKEN_MARGIN = 30.0


class PlatformError(DeliveryError):
    """Something went wrong with the Plateforme Agréée."""


class FlowRefused(PlatformError):
    """The PA refused this file (400, 413, 422): depositing it again gives the same answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.pa_message = status, code, message
        what = REFUSAL_STATUSES.get(status, "refus")
        detail = f" : {message}" if message else ""
        super().__init__(
            f"la plateforme agréée a refusé le flux ({what}, HTTP {status}, code {code}){detail}"
        )


class PlatformUnavailable(PlatformError):
    """The PA could not be reached or asked to come back later: nothing was deposited."""


class FlowMissing(PlatformError):
    """The PA does not have the flow it listed (404 on its download)."""


class FlowTooLarge(PlatformError):
    """The PA's file is larger than we read: reading stopped at the limit."""


class FlowOutcomeUnknown(PlatformError):
    """The file was sent but no answer came back: the flow may exist on the PA."""


def _seconds(value: Any, where: str) -> float:
    """The `timeout` setting: a positive number of seconds, else a French error naming it."""
    if value is None or value == "":
        return 30.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ConfigurationError(
            f"{where} : timeout « {value} » invalide (un nombre de secondes positif est attendu)"
        )
    return seconds


@dataclass(frozen=True)
class PlatformConfig:
    """Where an AFNOR API of the PA is and how to authenticate; the secret is hidden from repr.

    Subclasses name another API of the same kind (the directory): the connection, the
    environment variable and the words of the messages are class attributes."""

    #: Airflow connection, environment variable, and what the clerk calls the service.
    CONNECTION = "postier_plateforme"
    ENV = "POSTIER_PLATEFORME_URL"
    SERVICE = "plateforme agréée"

    #: Base URL of the service, the `/v1/...` paths are appended to it.
    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    timeout: float = 30.0
    #: Attempts of one request answered 429/503, and the longest `Retry-After` we wait for.
    attempts: int = 4
    max_wait: float = 120.0
    #: Where it was configured, for the messages that say what to check (the connection, or
    #: the variable `ENV`); the connection when empty. Not part of what the settings are.
    setting: str = field(default="", compare=False)

    @classmethod
    def from_connection(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any],
        *,
        where: str | None = None,
    ) -> Self:
        """The Airflow connection (`CONNECTION`): login/password = OAuth2 client id and secret;
        extra `base_url` (else `https://host[:port]`), `token_url` (required), `scope`,
        `timeout` (seconds). `where` names the setting in messages (the connection by
        default)."""
        where = where or f"connexion « {cls.CONNECTION} »"
        base = str(extra.get("base_url") or "")
        if not base and host:
            base = host if "://" in host else f"https://{host}" + (f":{port}" if port else "")
        token_url = str(extra.get("token_url") or "")
        if not base or not token_url:
            raise ConfigurationError(
                f"{where} incomplète : extra base_url (ou hôte) et token_url attendus"
            )
        return cls(
            base_url=base.rstrip("/"),
            token_url=token_url,
            client_id=login or "",
            client_secret=password or "",
            scope=extra.get("scope") or None,
            timeout=_seconds(extra.get("timeout"), where),
            setting=where,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self | None:
        """Outside Airflow, the variable `ENV` =
        `https://client_id:secret@host[:port]/path?token_url=https://…/token[&scope=…][&timeout=…]`
        read as the connection would be; None when not set."""
        url = environ.get(cls.ENV, "").strip()
        if not url:
            return None
        parts = parse_service_url(
            url,
            name=cls.ENV,
            schemes=("https", "http"),
            expected=f"{cls.SERVICE} : adresse https://client:secret@hôte/chemin?token_url=…",
        )
        if not parts.query.get("token_url"):
            raise ConfigurationError(f"{cls.ENV} ({redacted(url)}) : paramètre token_url attendu")
        netloc = parts.host if ":" not in parts.host else f"[{parts.host}]"
        port = f":{parts.port}" if parts.port else ""
        extra = {
            **parts.query,
            "base_url": f"{parts.scheme}://{netloc}{port}{parts.path}",
        }
        # Messages name the variable the clerk set, not the connection they did not.
        return cls.from_connection(None, None, parts.username, parts.password, extra, where=cls.ENV)

    @property
    def where(self) -> str:
        return f"{self.SERVICE} ({redacted(self.base_url)})"

    @property
    def configured_in(self) -> str:
        """The connection or the variable the clerk set."""
        return self.setting or f"connexion « {self.CONNECTION} »"


@dataclass(frozen=True)
class Flow:
    """A flow as the PA knows it."""

    flow_id: str
    tracking_id: str | None
    submitted_at: datetime | None
    ack_status: str | None = None


#: The lifecycle (CDAR) of an invoice we issued, as the Flow API types it (`FlowType`).
LIFECYCLE_FLOW_TYPE = "CustomerInvoiceLC"
#: The most results one search may return (`SearchFlowParams.limit`).
SEARCH_LIMIT = 100


@dataclass(frozen=True)
class LifecycleFlow:
    """A lifecycle flow the PA holds for us: its id and when it last changed on the PA."""

    flow_id: str
    updated_at: datetime


#: Tokens per (token URL, client id): tasks of one worker process share them.
_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


def forget_tokens() -> None:
    """Drop every cached token (tests; a changed secret)."""
    with _tokens_lock:
        _tokens.clear()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    """Seconds the PA asks us to wait (RFC 9110 §10.2.3: delay-seconds or HTTP-date); 1 s when
    it says nothing readable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    if when.tzinfo is None:
        # « -0000 » gives a naive date; an HTTP-date is always UTC (RFC 9110 §5.6.7).
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _read(response: httpx.Response, limit: int, where: str) -> bytes:
    """The body of a streamed answer; `FlowTooLarge` as soon as it is known to be longer than
    `limit` (declared, or once that many bytes are read): a hostile or broken PA never makes us
    hold more."""
    too_large = FlowTooLarge(f"{where} : fichier de plus de {limit} octets, lecture arrêtée")
    declared = response.headers.get("Content-Length", "")
    if "Content-Encoding" not in response.headers and declared.isdigit() and int(declared) > limit:
        raise too_large
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


def _json_object(data: bytes) -> dict[str, Any] | None:
    """`data` as a JSON object (what every answer of these APIs and of a token endpoint is);
    None when it is not JSON, or JSON of another kind."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_fields(data: bytes) -> tuple[str, str]:
    """`errorCode` and `errorMessage` of the PA's `Error` body, when it is one."""
    body = _json_object(data) or {}
    return str(body.get("errorCode") or "?"), str(body.get("errorMessage") or "")


def _token_fields(data: bytes) -> tuple[str, float]:
    """`access_token` (empty when missing or not a string) and `expires_in` (300 s when absent
    or unreadable) of a token endpoint's JSON answer (RFC 6749 §5.1)."""
    body = _json_object(data) or {}
    token = body.get("access_token")
    if not isinstance(token, str):
        return "", 0.0
    try:
        lifetime = float(body.get("expires_in") or 300)
    except (TypeError, ValueError):
        lifetime = 300.0
    return token, lifetime if 0 < lifetime < float("inf") else 300.0


class ApiClient:
    """One AFNOR API of the PA (Flow, Directory) with its OAuth2 client credentials token, its
    retries after 429/503 and its one new token after a 401. `sleep` is injectable so that waits
    can be observed."""

    #: What did not happen when a request fails, for the clerk (« rien n'a été déposé »).
    NOTHING_DONE = "la demande n'a pas abouti"
    _SEARCHED_BEFORE_AGAIN = "; le flux sera recherché avant tout nouveau dépôt"

    def __init__(
        self,
        config: PlatformConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._http = httpx.Client(timeout=config.timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- OAuth2 client credentials -------------------------------------------------------------

    def _token(self, *, renew: bool = False) -> str:
        key = (self.config.token_url, self.config.client_id)
        with _tokens_lock:
            cached = _tokens.get(key)
            if cached is not None and not renew and cached[1] > time.monotonic():
                return cached[0]
        form = {"grant_type": "client_credentials"}
        if self.config.scope:
            form["scope"] = self.config.scope
        try:
            request = self._http.build_request("POST", self.config.token_url, data=form)
            auth = (self.config.client_id, self.config.client_secret)
            response = self._http.send(request, auth=auth, stream=True)
            try:
                body = self._body(response, None, deposit=False)
            finally:
                response.close()
        except httpx.HTTPError as error:
            raise PlatformUnavailable(
                f"{self.config.where} : jeton d'accès non obtenu ({type(error).__name__})"
            ) from None
        if response.status_code in (400, 401):
            raise ConfigurationError(
                f"{self.config.where} : identifiants OAuth2 refusés (HTTP {response.status_code}) "
                f"; vérifiez le client et son secret ({self.config.configured_in})"
            )
        if response.status_code != 200:
            raise PlatformUnavailable(
                f"{self.config.where} : jeton d'accès non obtenu (HTTP {response.status_code})"
            )
        token, lifetime = _token_fields(body)
        if not token:
            # The body is not shown: it may hold a token, or echo the client's credentials.
            raise PlatformUnavailable(
                f"{self.config.where} : jeton d'accès non obtenu (réponse HTTP 200 sans "
                f"access_token JSON lisible) ; vérifiez token_url ({self.config.configured_in})"
            )
        with _tokens_lock:
            _tokens[key] = (token, time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN))
        return token

    # -- requests ------------------------------------------------------------------------------

    def _results(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The `results` of a search answer: a list of objects (flows, directory lines); else a
        French `PlatformUnavailable`, without the answer (it may be anything)."""
        results = body.get("results") or []
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise PlatformUnavailable(
                f"{self.config.where} : réponse de recherche illisible (« results » n'est pas "
                f"une liste d'objets) ; {self.NOTHING_DONE}"
            )
        return results

    def _body(self, response: httpx.Response, max_bytes: int | None, deposit: bool) -> bytes:
        """The answer's body, never more than `MAX_FILE_SIZE` bytes of it: a file asked for
        past `max_bytes` is `FlowTooLarge`; any other answer past the limit (JSON, an error) is
        `PlatformUnavailable`, or `FlowOutcomeUnknown` when it answers a deposit."""
        if max_bytes is not None and response.is_success:
            return _read(response, max_bytes, self.config.where)
        try:
            return _read(response, MAX_FILE_SIZE, self.config.where)
        except FlowTooLarge:
            too_large = (
                f"{self.config.where} : réponse de plus de {MAX_FILE_SIZE} octets "
                f"(HTTP {response.status_code}), lecture arrêtée"
            )
            if deposit and response.is_success:
                raise FlowOutcomeUnknown(f"{too_large} {self._SEARCHED_BEFORE_AGAIN}") from None
            raise PlatformUnavailable(f"{too_large} ; {self.NOTHING_DONE}") from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        deposit: bool = False,
        as_bytes: bool = False,
        names_flow: bool = False,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """One API call, retried after 429/503 (`Retry-After`) and once after a 401 with a new
        token; the JSON (with `as_bytes`, the bytes) of a 2xx, else an error of the tree above:
        with `names_flow` (the path is one flow's), a 404 is `FlowMissing`; with `max_bytes`, a
        2xx body longer than that is `FlowTooLarge`, read no further."""
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Authorization": f"Bearer {self._token()}"}
            try:
                request = self._http.build_request(
                    method, self.config.base_url + path, headers=headers, **kwargs
                )
                response = self._http.send(request, stream=True)
                try:
                    body = self._body(response, max_bytes, deposit)
                finally:
                    response.close()
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                raise PlatformUnavailable(
                    f"{self.config.where} injoignable ({type(error).__name__}) : "
                    f"{self.NOTHING_DONE}"
                ) from None
            except httpx.HTTPError as error:
                if deposit:
                    raise FlowOutcomeUnknown(
                        f"{self.config.where} : pas de réponse après l'envoi du fichier "
                        f"({type(error).__name__}) {self._SEARCHED_BEFORE_AGAIN}"
                    ) from None
                raise PlatformUnavailable(
                    f"{self.config.where} : pas de réponse ({type(error).__name__})"
                ) from None
            status = response.status_code
            if status == 401 and not renewed:
                # The cached token expired early or was revoked: one new token, one new try.
                renewed, attempt = True, 0
                self._token(renew=True)
                continue
            if status in RETRY_STATUSES:
                wait = _retry_after(response)
                if attempt >= self.config.attempts or wait > self.config.max_wait:
                    code, _ = _error_fields(body)
                    raise PlatformUnavailable(
                        f"{self.config.where} : indisponible (HTTP {status}, code {code}) après "
                        f"{attempt} essai(s) ; {self.NOTHING_DONE}"
                    )
                log.info("%s : HTTP %s, nouvel essai dans %.0f s", self.config.where, status, wait)
                self._sleep(wait)
                continue
            if status in REFUSAL_STATUSES and deposit:
                raise FlowRefused(status, *_error_fields(body))
            if status == 404 and names_flow:
                code, message = _error_fields(body)
                raise FlowMissing(
                    f"{self.config.where} : flux introuvable (HTTP 404, code {code})"
                    + (f" : {message}" if message else "")
                )
            if status >= 300:
                code, _ = _error_fields(body)
                raise PlatformUnavailable(
                    f"{self.config.where} : réponse inattendue (HTTP {status}, code {code})"
                )
            if as_bytes:
                return body
            answer = _json_object(body)
            if answer is None:
                # Every answer of these APIs is a JSON object; on a deposit the file was sent.
                unreadable = f"{self.config.where} : réponse illisible (HTTP {status})"
                if deposit:
                    raise FlowOutcomeUnknown(f"{unreadable} {self._SEARCHED_BEFORE_AGAIN}")
                raise PlatformUnavailable(unreadable)
            return answer


class FlowClient(ApiClient):
    """The Flow Service of our PA."""

    NOTHING_DONE = "rien n'a été déposé, le prochain envoi reprendra"

    def deposit(self, data: bytes, *, name: str, tracking_id: str, sha256: str) -> Flow:
        """Deposit one Factur-X invoice as a B2B flow; the flow the PA created."""
        info = {
            "trackingId": tracking_id,
            "name": name,
            "processingRule": PROCESSING_RULE,
            "flowSyntax": FLOW_SYNTAX,
            "flowProfile": FLOW_PROFILE,
            "sha256": sha256,
        }
        body = self._request(
            "POST",
            "/v1/flows",
            deposit=True,
            files={
                "flowInfo": (None, json.dumps(info), "application/json"),
                "file": (name, data, "application/pdf"),
            },
        )
        if not isinstance(body.get("flowId"), str) or not body["flowId"]:
            raise FlowOutcomeUnknown(
                f"{self.config.where} : réponse au dépôt sans flowId {self._SEARCHED_BEFORE_AGAIN}"
            )
        return Flow(
            flow_id=body["flowId"],
            tracking_id=body.get("trackingId"),
            submitted_at=_parse_time(body.get("submittedAt")),
        )

    def find(self, tracking_id: str) -> Flow | None:
        """The invoice flow we deposited under `tracking_id`, if the PA has one."""
        body = self._request(
            "POST",
            "/v1/flows/search",
            json={"where": {"trackingId": tracking_id, "flowDirection": ["Out"]}},
        )
        for item in self._results(body):
            if item.get("trackingId") == tracking_id and item.get("flowId"):
                ack = item.get("acknowledgement")
                return Flow(
                    flow_id=str(item["flowId"]),
                    tracking_id=tracking_id,
                    submitted_at=_parse_time(item.get("submittedAt")),
                    ack_status=ack.get("status") if isinstance(ack, dict) else None,
                )
        return None

    def lifecycle_flows(
        self, updated_after: datetime | None, *, limit: int = SEARCH_LIMIT
    ) -> tuple[list[LifecycleFlow], bool]:
        """The lifecycle flows of our invoices updated after `updated_after` (all when None),
        oldest first; and whether the page is full (more may follow: search again from the
        last one, the API paginates by `updatedAfter`)."""
        where: dict[str, Any] = {"flowType": [LIFECYCLE_FLOW_TYPE], "flowDirection": ["In"]}
        if updated_after is not None:
            stamp = updated_after.astimezone(UTC).isoformat(timespec="microseconds")
            where["updatedAfter"] = stamp.replace("+00:00", "Z")
        body = self._request("POST", "/v1/flows/search", json={"limit": limit, "where": where})
        results = self._results(body)
        flows = []
        for item in results:
            at = _parse_time(item.get("updatedAt")) or _parse_time(item.get("submittedAt"))
            flow_id = str(item.get("flowId") or "")
            # The API's ids are at most 36 characters (NotOnlyUuid); its dates carry a zone.
            if 0 < len(flow_id) <= 36 and at is not None and at.tzinfo is not None:
                flows.append(LifecycleFlow(flow_id, at))
            else:
                log.warning(
                    "%s : flux trouvé sans flowId ni date utilisables, ignoré", self.config.where
                )
        flows.sort(key=lambda f: f.updated_at)
        return flows, len(results) >= limit

    def download(self, flow_id: str, *, max_size: int | None = None) -> bytes:
        """The file of a flow as the PA received it (`docType` Original): for a lifecycle flow,
        the CDAR message. Past `max_size` bytes, `FlowTooLarge` and no more is read."""
        return bytes(
            self._request(
                "GET",
                f"/v1/flows/{urllib.parse.quote(flow_id, safe='')}",
                as_bytes=True,
                names_flow=True,
                max_bytes=max_size,
                params={"docType": "Original"},
            )
        )
