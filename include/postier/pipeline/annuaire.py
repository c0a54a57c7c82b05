"""The buyer's e-invoicing address (BT-49) of a `plateforme` invoice: typed on the customer's
data (« fiche client »), else found in the directory (« annuaire »), through a cache of look-ups.

- A look-up younger than `FRESH` is used without asking the directory again.
- An older one is asked again; when the directory cannot be asked (down, not configured), a
  look-up younger than `FALLBACK` is still used, its date shown to the clerk.
- A buyer the directory does not know, or a directory that cannot be asked with no usable
  look-up, refuses the invoice with a French reason: nothing leaves.

The address an invoice was prepared with is recorded (`invoice_einvoicing_addresses`) so that
the send renders the same Factur-X and tells where the address came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from postier.domain.models import Invoice
from postier.domain.selection import PARIS
from postier.domain.states import Channel
from postier.errors import PostierError
from postier.pipeline.context import Environment

if TYPE_CHECKING:
    from postier.delivery.annuaire import DirectoryEntry

#: A directory line rarely changes: a week-old answer is used as it is.
FRESH = timedelta(days=7)
#: When the directory cannot be asked, an answer up to a month old still routes the invoice.
FALLBACK = timedelta(days=30)

FICHE_CLIENT = "fiche_client"
ANNUAIRE = "annuaire"

NO_DIRECTORY = "aucun annuaire configuré (connexion postier_annuaire ou POSTIER_ANNUAIRE_URL)"


@dataclass(frozen=True)
class BuyerAddress:
    """The address an invoice goes to, and where it came from."""

    address: str
    source: str
    consulted_at: datetime | None = None

    @classmethod
    def typed(cls, invoice: Invoice) -> BuyerAddress:
        """The address typed on the customer's data."""
        return cls(invoice.customer.einvoicing_address or "", FICHE_CLIENT)

    @property
    def origin(self) -> str:
        """« fiche client » or « annuaire, consulté le JJ/MM/AAAA »."""
        if self.source == ANNUAIRE and self.consulted_at is not None:
            return f"annuaire, consulté le {self.consulted_at.astimezone(PARIS):%d/%m/%Y}"
        return "fiche client"

    @property
    def note(self) -> str:
        return f"adresse de facturation électronique {self.address} : {self.origin}"


def with_address(invoice: Invoice, found: BuyerAddress) -> Invoice:
    """The invoice whose buyer receives it at `found` (what the Factur-X's BT-49 carries)."""
    customer = dataclasses.replace(invoice.customer, einvoicing_address=found.address)
    return dataclasses.replace(invoice, customer=customer)


class AddressResolver:
    """Resolves the buyers of one chunk: each (SIREN, SIRET) asked at most once."""

    def __init__(self, env: Environment, conn: psycopg.Connection) -> None:
        self._env, self._conn = env, conn
        self._known: dict[tuple[str, str], BuyerAddress | str] = {}

    def resolve(self, invoice: Invoice) -> BuyerAddress | str | None:
        """Its address, or a French reason to refuse it; None when not a `plateforme` invoice
        or when its buyer has no valid SIREN (the preparation's checks say so)."""
        c = invoice.customer
        if c.channel is not Channel.PLATEFORME:
            return None
        if c.einvoicing_address:
            return BuyerAddress(c.einvoicing_address, FICHE_CLIENT)
        siren = c.legal_siren
        if not siren or not siren.isdigit() or len(siren) != 9:
            return None
        siret = c.siret if c.siret and c.siret.startswith(siren) else ""
        key = (siren, siret)
        if key not in self._known:
            self._known[key] = self._from_directory(c.code, siren, siret)
        return self._known[key]

    def _from_directory(self, code: str, siren: str, siret: str) -> BuyerAddress | str:
        row = self._conn.execute(
            "SELECT address, looked_up_at, now() - looked_up_at FROM directory_lookups "
            "WHERE siren = %s AND siret = %s",
            (siren, siret),
        ).fetchone()
        cached = BuyerAddress(row[0], ANNUAIRE, row[1]) if row and row[2] < FALLBACK else None
        if row is not None and row[2] < FRESH:
            return BuyerAddress(row[0], ANNUAIRE, row[1])
        try:
            entry = self._lookup(siren, siret)
        except PostierError as error:
            if cached is not None:
                return cached
            return (
                f"adresse de facturation électronique du client {code} inconnue : aucune sur sa "
                f"fiche, l'annuaire n'a pas pu être consulté ({error}) et il n'a pas été consulté "
                f"avec succès depuis {FALLBACK.days} jours pour son SIREN {siren} ; préparez de "
                "nouveau quand l'annuaire répond, ou saisissez l'adresse sur la fiche du client"
            )
        if entry is None:
            self._conn.execute(
                "DELETE FROM directory_lookups WHERE siren = %s AND siret = %s", (siren, siret)
            )
            return (
                f"client {code} absent de l'annuaire (SIREN {siren}"
                + (f", SIRET {siret}" if siret else "")
                + ") : il ne reçoit pas de factures électroniques à cette adresse ; vérifiez son "
                "SIREN ou saisissez son adresse de facturation électronique sur sa fiche"
            )
        row = self._conn.execute(
            "INSERT INTO directory_lookups (siren, siret, address, line_siret, line_routing) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (siren, siret) DO UPDATE SET "
            "address = EXCLUDED.address, line_siret = EXCLUDED.line_siret, "
            "line_routing = EXCLUDED.line_routing, looked_up_at = now() RETURNING looked_up_at",
            (siren, siret, entry.address, entry.siret, entry.routing_identifier),
        ).fetchone()
        assert row is not None
        return BuyerAddress(entry.address, ANNUAIRE, row[0])

    def _lookup(self, siren: str, siret: str) -> DirectoryEntry | None:
        from postier.delivery.annuaire import DirectoryClient
        from postier.errors import ConfigurationError

        if self._env.annuaire is None:
            raise ConfigurationError(NO_DIRECTORY)
        # One client per buyer looked up (a few per chunk); the OAuth2 token is shared anyway.
        with DirectoryClient(self._env.annuaire) as client:
            return client.lookup(siren, siret or None)


def record_addresses(conn: psycopg.Connection, addresses: dict[int, BuyerAddress]) -> None:
    """The address each prepared invoice was made with (replacing an earlier preparation's)."""
    if not addresses:
        return
    found = addresses.values()
    conn.execute(
        "INSERT INTO invoice_einvoicing_addresses (invoice_id, address, source, consulted_at) "
        "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[]) "
        "ON CONFLICT (invoice_id) DO UPDATE SET "
        "address = EXCLUDED.address, source = EXCLUDED.source, "
        "consulted_at = EXCLUDED.consulted_at",
        (
            list(addresses),
            [a.address for a in found],
            [a.source for a in found],
            [a.consulted_at for a in found],
        ),
    )


def recorded_addresses(conn: psycopg.Connection, ids: list[int]) -> dict[int, BuyerAddress]:
    """The addresses the invoices were prepared with."""
    rows = conn.execute(
        "SELECT invoice_id, address, source, consulted_at FROM invoice_einvoicing_addresses "
        "WHERE invoice_id = ANY(%s)",
        (ids,),
    ).fetchall()
    return {r[0]: BuyerAddress(r[1], r[2], r[3]) for r in rows}
