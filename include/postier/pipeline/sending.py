"""Send (spec « Envoyer les factures »): definitive, signed, archived, delivered per channel.

For each invoice of the chunk, in one transaction: final Factur-X PDF, signed; archived in the GED
when archiving is on; marked dematerialised with an exchange-log entry for the portal (Artis) or
Chorus Pro when that dematerialisation is on; then Envoyé, with sent date/login, and immutable.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.types.json import Jsonb

from postier.delivery.archive import DocumentArchive
from postier.domain.models import Invoice
from postier.domain.states import Channel
from postier.domain.treatments import SEND
from postier.errors import PostierError
from postier.pipeline.context import Environment
from postier.pipeline.runs import Run
from postier.store.invoices import fingerprint, load_invoices
from postier.store.runs import DONE, FAILED, SKIPPED, ItemOutcome, record_outcomes
from postier.store.settings import Settings, load_settings
from postier.store.transitions import lock_for_transition, stamp_transition

log = logging.getLogger(__name__)


def _log_exchange(
    conn: psycopg.Connection,
    invoice_id: int,
    run: Run,
    kind: str,
    partner: str,
    status: str,
    report: dict,
) -> None:
    conn.execute(
        "INSERT INTO exchanges (invoice_id, run_id, kind, partner, status, report, by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (invoice_id, run.id, kind, partner, status, Jsonb(report), run.triggered_by),
    )


def _channel_effects(
    conn: psycopg.Connection, invoice: Invoice, run: Run, settings: Settings, notes: list[str]
) -> None:
    channel = invoice.customer.channel
    demat = None
    if channel is Channel.PORTAIL:
        if settings.demat_artis:
            demat = "artis"
            _log_exchange(
                conn,
                invoice.id,
                run,
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
            demat = "chorus"
            _log_exchange(
                conn,
                invoice.id,
                run,
                "dematerialisation_chorus",
                "CHORUS",
                "a_deposer",
                {"rapport": "facture Factur-X signée, à déposer sur Chorus Pro"},
            )
        else:
            notes.append("dématérialisation Chorus désactivée")
    if demat:
        conn.execute(
            "UPDATE invoices SET dematerialized = true, dematerialized_channel = %s WHERE id = %s",
            (demat, invoice.id),
        )


def send_invoices(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    from postier.documents import render_final_invoice

    settings = load_settings(conn)
    seller = settings.seller()
    signer = env.signer()
    archive = DocumentArchive(env.archive_url)
    with conn.transaction():
        locked = lock_for_transition(conn, ids, SEND)
        outcomes = [ItemOutcome(s.invoice_id, SKIPPED, s.reason) for s in locked.skipped]
        stored: dict[int, str | None] = dict(
            conn.execute(
                "SELECT id, fingerprint FROM invoices WHERE id = ANY(%s)", (list(locked.ids),)
            ).fetchall()
        )
        sent: list[int] = []
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
            try:
                pdf = signer.sign(render_final_invoice(invoice, seller))
            except PostierError as error:
                outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
                continue
            notes: list[str] = []
            location = None
            if settings.archiving:
                key = DocumentArchive.key_for(
                    invoice.invoice_date, invoice.customer.code, invoice.number
                )
                # Not yet sent, so any file already there was left by a rolled-back attempt.
                archived = archive.put(key, pdf, replace_unindexed=True)
                location = archived.location
                conn.execute(
                    "INSERT INTO documents (invoice_id, kind, sha256, size, location, signed) "
                    "VALUES (%s, 'facture', %s, %s, %s, true) "
                    "ON CONFLICT (invoice_id, kind) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                    "size = EXCLUDED.size, location = EXCLUDED.location, at = now()",
                    (invoice.id, archived.sha256, archived.size, location),
                )
                _log_exchange(
                    conn,
                    invoice.id,
                    run,
                    "archivage_ged",
                    "GED",
                    "archivee",
                    {"emplacement": location, "sha256": archived.sha256},
                )
            else:
                notes.append("archivage désactivé : PDF non conservé dans la GED")
            _channel_effects(conn, invoice, run, settings, notes)
            sent.append(invoice.id)
            outcomes.append(ItemOutcome(invoice.id, DONE, " ; ".join(notes) or None, location))
        stamp_transition(conn, sent, SEND, run.triggered_by, run.id)
        record_outcomes(conn, run.id, outcomes)
