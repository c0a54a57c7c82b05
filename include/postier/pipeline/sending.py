"""Send (spec « Envoyer les factures »): definitive, signed, archived, delivered per channel.

For each invoice of the chunk, in one transaction: final Factur-X PDF, signed; archived in the GED
when archiving is on; marked dematerialised with an exchange-log entry for the portal (Artis) or
Chorus Pro when that dematerialisation is on; then Envoyé, with sent date/login, and immutable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from postier.delivery.archive import DocumentArchive
from postier.domain.models import Invoice
from postier.domain.states import Channel
from postier.domain.treatments import SEND
from postier.domain.validation import sending_problems, zero_amount_note
from postier.errors import ConfigurationError, PostierError
from postier.pipeline.annuaire import BuyerAddress, recorded_addresses, with_address
from postier.pipeline.context import Environment
from postier.pipeline.runs import Run, document_step, facturx_first, files_sync
from postier.store.exchanges import Exchange, record_exchanges
from postier.store.invoices import fingerprint, load_invoices
from postier.store.runs import DONE, FAILED, SKIPPED, ItemOutcome, record_outcomes
from postier.store.settings import Settings, load_settings
from postier.store.transitions import lock_for_transition, stamp_transition

log = logging.getLogger(__name__)


@dataclass
class _ChunkWrites:
    """The chunk's rows, written together at the end of its transaction (a few statements per
    chunk rather than several round trips per invoice)."""

    run: Run
    exchanges: list[Exchange] = field(default_factory=list)
    documents: list[tuple[Any, ...]] = field(default_factory=list)
    #: Invoice id → the channel it was dematerialised on (set with its send state).
    dematerialized: dict[int, str] = field(default_factory=dict)

    def exchange(self, invoice_id: int, kind: str, partner: str, status: str, report: dict) -> None:
        self.exchanges.append(
            Exchange(invoice_id, self.run.id, kind, partner, status, report, self.run.triggered_by)
        )

    def flush(self, conn: psycopg.Connection) -> None:
        """One statement per table, the rows passed as arrays (not one statement per row)."""
        if self.documents:
            conn.execute(
                "INSERT INTO documents (invoice_id, kind, sha256, size, location, signed) "
                "SELECT d.invoice_id, 'facture', d.sha256, d.size, d.location, true "
                "FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[]) "
                "AS d(invoice_id, sha256, size, location) "
                "ON CONFLICT (invoice_id, kind, version) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                "size = EXCLUDED.size, location = EXCLUDED.location, at = now()",
                [list(column) for column in zip(*self.documents, strict=True)],
            )
        record_exchanges(conn, self.exchanges)


def _channel_effects(
    writes: _ChunkWrites, invoice: Invoice, settings: Settings, notes: list[str]
) -> None:
    channel = invoice.customer.channel
    if channel is Channel.PORTAIL:
        if settings.demat_artis:
            writes.dematerialized[invoice.id] = "artis"
            writes.exchange(
                invoice.id,
                "mise_a_disposition",
                "CLIENT",
                "a_envoyer",
                {
                    "rapport": "facture signée mise à disposition sur l'espace client",
                    "destinataires": list(invoice.customer.emails),
                },
            )
        else:
            notes.append("dématérialisation Artis désactivée : pas de courriel")
    elif channel is Channel.CHORUS:
        if settings.demat_chorus:
            writes.dematerialized[invoice.id] = "chorus"
            writes.exchange(
                invoice.id,
                "dematerialisation_chorus",
                "CHORUS",
                "a_deposer",
                {"rapport": "facture Factur-X signée, à déposer sur Chorus Pro"},
            )
        else:
            notes.append("dématérialisation Chorus désactivée")


#: Refused at the start of a send: the customer would be told of a PDF stored nowhere.
ARTIS_WITHOUT_ARCHIVE = (
    "dématérialisation Artis activée (paramètre DEMAT_ARTIS) mais archivage des factures "
    "désactivé (ARCHIVAGE_FACTURES) : le client serait prévenu d'une facture disponible sur son "
    "portail alors que le PDF signé n'est conservé nulle part. Activez ARCHIVAGE_FACTURES ou "
    "désactivez DEMAT_ARTIS, puis relancez : rien n'a été envoyé."
)


def check_send_configuration(settings: Settings) -> None:
    """A French `ConfigurationError` when the settings make a send wrong for every invoice."""
    if settings.demat_artis and not settings.archiving:
        raise ConfigurationError(ARTIS_WITHOUT_ARCHIVE)


def send_invoices(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    from postier.documents import render_final_invoice

    settings = load_settings(conn)
    check_send_configuration(settings)
    seller = settings.seller()
    signer = env.signer(seller.name)
    env.refuse_demo_fallbacks(ged=settings.archiving)
    archive = env.archive()
    with conn.transaction():
        locked = lock_for_transition(conn, ids, SEND)
        outcomes = [ItemOutcome(s.invoice_id, SKIPPED, s.reason) for s in locked.skipped]
        stored = locked.fingerprints
        sent: list[int] = []
        writes = _ChunkWrites(run)
        addresses = recorded_addresses(conn, list(locked.ids))
        # The chunk's fingerprints and checks first, in one pass, then its documents: run
        # between two documents (whose render evicts the CPU's caches) they cost 3 times more.
        checked: list[tuple[Invoice, BuyerAddress | None]] = []
        for invoice in load_invoices(conn, locked.ids):
            if stored.get(invoice.id) and stored[invoice.id] != fingerprint(invoice):
                outcomes.append(
                    ItemOutcome(
                        invoice.id,
                        FAILED,
                        "facture modifiée depuis sa préparation : préparez-la de nouveau",
                    )
                )
                continue
            # A `plateforme` invoice goes to the address it was prepared with (directory or
            # customer data), and the report says which.
            address = addresses.get(invoice.id)
            if address is not None and invoice.customer.channel is Channel.PLATEFORME:
                invoice = with_address(invoice, address)
            # Checked again whatever the fingerprint (a missing one is not a pass): customer
            # data may have changed since the preparation, and a sent invoice is immutable.
            problems = sending_problems(invoice)
            if problems:
                outcomes.append(ItemOutcome(invoice.id, FAILED, " ; ".join(problems)))
                continue
            checked.append((invoice, address))
        cii = facturx_first((invoice for invoice, _ in checked), seller, outcomes)
        for invoice, address in checked:
            if invoice.id not in cii:
                continue
            try:
                with document_step():
                    pdf = signer.sign(render_final_invoice(invoice, seller, xml=cii[invoice.id]))
            except PostierError as error:
                outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
                continue
            notes = [n for n in [zero_amount_note(invoice, "envoyée")] if n]
            if invoice.customer.channel is Channel.PLATEFORME:
                notes.append((address or BuyerAddress.typed(invoice)).note)
            location = None
            if settings.archiving:
                key = DocumentArchive.key_for(
                    invoice.invoice_date, invoice.customer.code, invoice.number
                )
                # Not yet sent, so any file already there was left by a rolled-back attempt;
                # written with the next few, at the latest by the sync below (`WriteBatch`).
                archived = archive.add(key, pdf)
                location = archived.location
                writes.documents.append((invoice.id, archived.sha256, archived.size, location))
                writes.exchange(
                    invoice.id,
                    "archivage_ged",
                    "GED",
                    "archivee",
                    {"emplacement": location, "sha256": archived.sha256},
                )
            else:
                notes.append("archivage désactivé : PDF non conservé dans la GED")
            _channel_effects(writes, invoice, settings, notes)
            sent.append(invoice.id)
            outcomes.append(ItemOutcome(invoice.id, DONE, " ; ".join(notes) or None, location))
        # The GED files on disk before the rows saying they are there commit.
        with files_sync():
            archive.sync()
        writes.flush(conn)
        channels = [writes.dematerialized.get(i) for i in sent]
        stamp_transition(conn, sent, SEND, run.triggered_by, run.id, channels=channels)
        record_outcomes(conn, run.id, outcomes)
