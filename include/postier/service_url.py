"""Connection URLs from the environment (SMTP, SFTP, database), parsed without leaking them.

Such a URL usually carries a password, and the parsers quote the part they choke on: with an
unencoded `#` in the password, `urlsplit(...).port` raises « Port could not be cast to integer
value as '<start of the password>' », libpq « invalid percent-encoded token: "<password>" ».
Every error here names the URL by its scheme and host only, and never chains the parser's
exception (`from None`), so neither the message nor the traceback in a task log holds a secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from postier.errors import ConfigurationError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")

ENCODING_HINT = (
    "un caractère spécial du login ou du mot de passe doit y être encodé "
    "(%23 pour #, %40 pour @, %2F pour /, %3F pour ?, %25 pour %)"
)


def redacted(url: str) -> str:
    """`scheme://host` of `url`, nothing else; less when even the host cannot be told apart.

    The host is read after the last `@`: the login and password always come before it."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "(adresse masquée)"
    candidate = rest.rpartition("@")[2]
    candidate = re.split(r"[/?#]", candidate, maxsplit=1)[0]
    if not candidate.startswith("["):
        candidate = candidate.partition(":")[0]
    elif "]" in candidate:
        candidate = candidate[: candidate.index("]") + 1]
    host = candidate if _HOST.fullmatch(candidate) else "…"
    return f"{scheme.lower()}://{host}"


@dataclass(frozen=True)
class ServiceUrl:
    """The parts of a `scheme://login:password@host:port/path?query` URL, decoded."""

    scheme: str
    host: str
    port: int | None
    username: str | None
    password: str | None = field(repr=False)
    path: str
    query: dict[str, str]


def parse_service_url(
    url: str, *, name: str, schemes: tuple[str, ...], expected: str
) -> ServiceUrl:
    """Parse `url` (from the setting `name`); a `ConfigurationError` that names only its scheme
    and host when it is not a `schemes` URL with a host, a numeric port and nothing after `#`."""
    where = f"{name} ({redacted(url)})"
    if "#" in url:
        raise ConfigurationError(
            f"{where} : caractère « # » dans l'adresse ; {ENCODING_HINT}."
        ) from None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    except ValueError:
        raise ConfigurationError(
            f"{where} : adresse illisible (port non numérique ?) ; {ENCODING_HINT}."
        ) from None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise ConfigurationError(f"{where} : {expected} attendu.") from None
    return ServiceUrl(
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        path=unquote(parts.path),
        query=query,
    )
