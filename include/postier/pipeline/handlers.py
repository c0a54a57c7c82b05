"""Chunk handlers: what each treatment does to the pending invoices of one chunk.

Each handler runs in one transaction: the state changes, the stamps, the documents index and the
item outcomes commit together, so a retried chunk finds exactly the work still to do.
"""

from __future__ import annotations

import psycopg

from postier.domain.models import Invoice
from postier.domain.treatments import HOLD, KEEP_INTERNAL, PREPARE, REQUEUE, Transition, TreatmentId
from postier.domain.validation import sending_problems, zero_amount_note
from postier.errors import PostierError
from postier.pipeline.annuaire import AddressResolver, BuyerAddress, record_addresses, with_address
from postier.pipeline.chorus import collect_chunk
from postier.pipeline.context import Environment
from postier.pipeline.export import export_chunk
from postier.pipeline.runs import ChunkHandler, Run, document_step, facturx_first
from postier.storage import WriteBatch
from postier.store.invoices import fingerprint, load_invoices
from postier.store.runs import DONE, FAILED, SKIPPED, ItemOutcome, record_outcomes
from postier.store.settings import load_settings
from postier.store.transitions import Locked, lock_for_transition, stamp_edited, stamp_transition


def _skips(locked: Locked) -> list[ItemOutcome]:
    return [ItemOutcome(s.invoice_id, SKIPPED, s.reason) for s in locked.skipped]


def transition_handler(transition: Transition) -> ChunkHandler:
    """Hold, keep internal, requeue: a pure state change."""

    def handle(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
        with conn.transaction():
            locked = lock_for_transition(conn, ids, transition)
            stamp_transition(conn, locked.ids, transition, run.triggered_by, run.id)
            done = [ItemOutcome(i, DONE) for i in locked.ids]
            record_outcomes(conn, run.id, done + _skips(locked))

    return handle


def print_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    """One PDF per invoice; a real print stamps the edit date and login, a preview nothing."""
    from postier.documents import render_invoice

    seller = load_settings(conn).seller()
    folder = "apercus" if run.preview else "factures"
    outcomes: list[ItemOutcome] = []
    printed: list[int] = []
    for invoice in load_invoices(conn, ids):
        with document_step():
            pdf = render_invoice(invoice, seller, preview=run.preview)
        path = run.folder.write(f"{folder}/{invoice.number}.pdf", pdf)
        outcomes.append(ItemOutcome(invoice.id, DONE, output=path))
        printed.append(invoice.id)
    with conn.transaction():
        if not run.preview:
            stamp_edited(conn, printed, run.triggered_by)
        record_outcomes(conn, run.id, outcomes)


def bills_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    """The bills of exchange of the chunk's invoices, one per due date, in one chunk file.

    An invoice whose bills cannot be drawn (e.g. no bank details for the drawee) is refused with
    its reason; the others are printed."""
    from postier.documents import bills_of, render_bills

    seller = load_settings(conn).seller()
    printable: list[Invoice] = []
    outcomes: list[ItemOutcome] = []
    for invoice in load_invoices(conn, ids):
        try:
            bills_of(invoice)
        except PostierError as error:
            outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
            continue
        printable.append(invoice)
    if printable:
        # Named after the chunk's first invoice: chunks are in invoice-number order.
        name = f"traites-{printable[0].number}.pdf"
        pdf = render_bills(printable, seller)
        path = run.folder.write(f"traites/{name}", pdf)
        outcomes += [ItemOutcome(i.id, DONE, output=path) for i in printable]
    with conn.transaction():
        record_outcomes(conn, run.id, outcomes)


def prepare_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    """Validate each invoice for its channel and render its final document; valid ones → Prêt."""
    from postier.documents import render_final_invoice

    seller = load_settings(conn).seller()
    resolver = AddressResolver(env, conn)
    with conn.transaction():
        locked = lock_for_transition(conn, ids, PREPARE)
        ready: list[int] = []
        prints: list[str] = []  # the prepared ones' fingerprints, in the order of `ready`
        addresses: dict[int, BuyerAddress] = {}
        outcomes = _skips(locked)
        # The chunk's checks and fingerprints first, in one pass, then its documents: run
        # between two documents (whose render evicts the CPU's caches) they cost 3 times more.
        checked: list[tuple[Invoice, BuyerAddress | None, str]] = []
        for invoice in load_invoices(conn, locked.ids):
            # A `plateforme` buyer's address: its data, else the directory (or refused).
            found = resolver.resolve(invoice)
            if isinstance(found, str):
                outcomes.append(ItemOutcome(invoice.id, FAILED, found))
                continue
            if found is not None:
                invoice = with_address(invoice, found)
            problems = sending_problems(invoice)
            if problems:
                outcomes.append(ItemOutcome(invoice.id, FAILED, " ; ".join(problems)))
                continue
            checked.append((invoice, found, fingerprint(invoice)))
        # The prepared PDFs written a few at a time, not each after its render (`WriteBatch`).
        files = WriteBatch(run.folder.write, batched=run.folder.storage.local)
        cii = facturx_first((invoice for invoice, _, _ in checked), seller, outcomes)
        for invoice, found, print_ in checked:
            if invoice.id not in cii:
                continue
            try:
                with document_step():
                    pdf = render_final_invoice(invoice, seller, xml=cii[invoice.id])
            except PostierError as error:  # a document error names the invoice and the field
                outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
                continue
            name = f"preparees/{invoice.number}.pdf"
            files.add(name, pdf)
            path = run.folder.file_location(name)
            prints.append(print_)
            ready.append(invoice.id)
            notes = [zero_amount_note(invoice, "préparée"), found and found.note]
            note = " ; ".join(n for n in notes if n) or None
            if found is not None:
                addresses[invoice.id] = found
            outcomes.append(ItemOutcome(invoice.id, DONE, note, output=path))
        # Every file complete before the rows naming it commit.
        files.flush()
        record_addresses(conn, addresses)
        stamp_transition(conn, ready, PREPARE, run.triggered_by, run.id, fingerprints=prints)
        record_outcomes(conn, run.id, outcomes)


def send_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    from postier.pipeline.sending import send_invoices

    send_invoices(env, conn, run, ids)


CHUNK_HANDLERS: dict[TreatmentId, ChunkHandler] = {
    TreatmentId.IMPRIMER: print_chunk,
    TreatmentId.IMPRIMER_TRAITES: bills_chunk,
    TreatmentId.PREPARER_ENVOI: prepare_chunk,
    TreatmentId.METTRE_EN_ATTENTE: transition_handler(HOLD),
    TreatmentId.CONSERVER_EN_INTERNE: transition_handler(KEEP_INTERNAL),
    TreatmentId.REMETTRE_EN_ATTENTE: transition_handler(REQUEUE),
    TreatmentId.ENVOYER: send_chunk,
    TreatmentId.ENVOI_NOCTURNE: send_chunk,
    TreatmentId.CHORUS_RECUPERER: collect_chunk,
    TreatmentId.EXPORTER_IMPRESSION: export_chunk,
}
