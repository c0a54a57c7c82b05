"""The directory (« annuaire ») of the e-invoicing reform, through the AFNOR XP Z12-013 Directory
Service API (annex B): whether and at which electronic address a buyer receives e-invoices.

A buyer declares directory lines: one for its SIREN (where its invoices go by default), and
possibly more specific ones for a facility (SIREN + SIRET) or a service of it (SIREN + SIRET +
routing code). `POST /v1/directory-line/search` with the buyer's SIREN returns them all; the line
that applies is the most specific one matching what we know of the buyer, and its
`addressingIdentifier` is the address (BT-49, scheme 0225) under which the invoice is sent.
A line whose platform is `Disabled` receives nothing (the official document cannot even carry that
value: `platformStatus` has `maxLength: 7`; a directory that sends it anyway is still obeyed).

Same connection handling, OAuth2 token and retries as the Flow client (`ApiClient`); its own
Airflow connection `postier_annuaire` (or `POSTIER_ANNUAIRE_URL`), with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from postier.delivery.plateforme import ApiClient, PlatformConfig, PlatformError

#: Results asked per page; a buyer has a handful of lines, a few pages at most are read.
PAGE = 100
#: Pages read at the most: past them the look-up fails rather than choose among some lines only.
MAX_PAGES = 10


class DirectoryConfig(PlatformConfig):
    """The Directory Service: same fields as `postier_plateforme` (login/password = OAuth2
    client, extra `base_url`, `token_url`, `scope`, `timeout`)."""

    CONNECTION = "postier_annuaire"
    ENV = "POSTIER_ANNUAIRE_URL"
    SERVICE = "annuaire"


@dataclass(frozen=True)
class DirectoryEntry:
    """The directory line a buyer receives its invoices at."""

    address: str
    siren: str
    siret: str | None = None
    routing_identifier: str | None = None
    #: `WK` / `DFH` (recipientPlatformType), when the directory says.
    platform_type: str | None = None


def _specificity(
    line: dict[str, Any], siren: str, siret: str | None, routing: str | None
) -> int | None:
    """How precisely `line` matches the buyer (3: its routing code, 2: its facility, 1: its
    SIREN); None when it is another buyer's, another facility's or another service's line."""
    if line.get("siren") != siren or not line.get("addressingIdentifier"):
        return None
    if (line.get("platform") or {}).get("platformStatus") == "Disabled":
        return None
    line_siret = line.get("siret")
    line_routing = (line.get("routingCode") or {}).get("routingIdentifier")
    if line_routing:
        return 3 if line_siret == siret and routing and line_routing == routing else None
    if line_siret:
        return 2 if line_siret == siret else None
    return 1


def choose_line(
    lines: list[dict[str, Any]], siren: str, siret: str | None = None, routing: str | None = None
) -> DirectoryEntry | None:
    """The line the buyer's invoices go to: the most specific matching one; None if none."""
    best: tuple[int, dict[str, Any]] | None = None
    for line in lines:
        rank = _specificity(line, siren, siret, routing)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, line)
    if best is None:
        return None
    line = best[1]
    return DirectoryEntry(
        address=str(line["addressingIdentifier"]),
        siren=siren,
        siret=line.get("siret"),
        routing_identifier=(line.get("routingCode") or {}).get("routingIdentifier"),
        platform_type=(line.get("platform") or {}).get("platformType"),
    )


class DirectoryClient(ApiClient):
    """The Directory Service; errors are those of `ApiClient` (`PlatformUnavailable` when the
    directory cannot be asked)."""

    NOTHING_DONE = "aucune réponse"

    def lines(self, siren: str) -> list[dict[str, Any]]:
        """Every directory line of the SIREN (all pages); `PlatformError` when there are more
        than `MAX_PAGES` pages of them (the line that applies could be among those not read)."""
        found: list[dict[str, Any]] = []
        # One page past the last one read tells whether anything is left unread.
        for page in range(MAX_PAGES + 1):
            body = self._request(
                "POST",
                "/v1/directory-line/search",
                json={
                    "filters": {"siren": {"op": "contains", "value": siren}},
                    "limit": PAGE,
                    "ignore": page * PAGE,
                },
            )
            results = self._results(body)
            if page == MAX_PAGES and results:
                raise PlatformError(
                    f"{self.config.where} : plus de {len(found)} lignes pour le SIREN {siren}, "
                    "lecture arrêtée : aucune ligne n'est choisie parmi une partie seulement"
                )
            found += results
            total = body.get("totalNumberOfResults")
            if len(results) < PAGE or (isinstance(total, int) and len(found) >= total):
                break
        return found

    def lookup(
        self, siren: str, siret: str | None = None, routing: str | None = None
    ) -> DirectoryEntry | None:
        """Where the buyer receives e-invoices; None when the directory has no line for it."""
        return choose_line(self.lines(siren), siren, siret, routing)
