"""Récupérer les factures à destination de Chorus: signed Factur-X PDFs, one EDI flow per chunk
deposited on the Chorus Pro SFTP server, and a ZIP of the PDFs for the clerk (finalize).

Only « Envoyé au destinataire » invoices are collected (the spec's table): sending is the
definitive step, with its confirmation, and never happens here.

What is deposited is the archived document: with archiving on, exactly the bytes held in the GED
(sha256 checked); an invoice sent while archiving was off is archived first. After a Chorus
rejection for routing data (status 04), a new document is generated with the customer's
corrected data, signed and archived as the next version beside the first.

Exactly once, per chunk (each step commits on its own):
1. flows recorded by an earlier attempt and not yet deposited (`preparee`) that hold invoices of
   the chunk are uploaded again, same name, same bytes — Chorus knows a flow by its name;
2. invoices are checked (Chorus rules, seller IBAN) before anything leaves;
3. the flow is built, its file written, and recorded with its invoices and their documents
   (`chorus_flows`, `chorus_flow_invoices.document_id`, `invoices.chorus_flow_name`) in one
   transaction, before the upload;
4. upload (temporary name, then rename), then, in one transaction: flow `deposee`, invoices
   `chorus_deposited_at`, one exchange-log row per invoice, item outcomes.
A crash between 3 and 4 leaves a `preparee` flow that step 1 of the retry (or of a later run,
which selects the same invoices since they are not deposited) finishes. No invoice enters two
flows: step 3 only takes invoices without `chorus_flow_name`, under row locks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import zipfile
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from postier.delivery.archive import Archived, DocumentArchive
from postier.delivery.chorus_edi import (
    FACTURX_INTERFACE,
    document_name,
    flow_name,
    pack,
    unpack,
)
from postier.domain.models import Invoice, Seller
from postier.domain.states import SendState
from postier.domain.validation import chorus_deposit_problems
from postier.errors import ConfigurationError, DeliveryError, InvoiceValidationError, PostierError
from postier.pipeline.context import Environment
from postier.pipeline.runs import Run
from postier.store.exchanges import Exchange, record_exchanges
from postier.store.invoices import load_invoices
from postier.store.runs import DONE, FAILED, PENDING, SKIPPED, ItemOutcome, record_outcomes
from postier.store.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Under the run's output folder: the signed PDFs, and `flux/` the flow files as deposited.
PDF_DIR = "chorus"
FLOW_DIR = "chorus/flux"
ZIP_NAME = "factures-chorus.zip"

NO_SERVER = (
    "aucun serveur Chorus configuré (connexion Airflow « postier_chorus_sftp », ou "
    "POSTIER_CHORUS_SFTP_URL et POSTIER_CHORUS_HOST_KEY) : rien n'a été déposé"
)
DEMAT_OFF = "dématérialisation Chorus désactivée (paramètre DEMAT_CHORUS) : pas de dépôt EDI"

#: Chorus Pro invoice status « rejetée pour erreur de données d'acheminement ».
REJECTED_ROUTING = "04"

#: Chorus Pro invoice status « rejetée pour un autre motif ».
REJECTED_OTHER = "05"

#: What the clerk does after a rejection (a sent invoice is immutable: never « corrigez-la »).
ADVICE_AFTER_04 = (
    "rejet pour données d'acheminement (code service, numéro d'engagement, SIRET de "
    "l'acheteur) : ces données appartiennent au client ; corrigez-les dans sa fiche, puis "
    "lancez « Récupérer les factures à destination de Chorus » : un nouveau document signé y "
    "sera déposé et archivé comme nouvelle version, à côté du premier"
)
ADVICE_AFTER_05 = (
    "rejet pour un autre motif : la facture envoyée n'est plus modifiable ; établissez un avoir "
    "qui l'annule et une nouvelle facture corrigée"
)
ADVICE_AFTER_FLOW_REJECTION = (
    "rejet du flux déposé : la prochaine « Récupérer les factures à destination de Chorus » "
    "déposera de nouveau le document archivé ; si le motif porte sur le contenu de la facture "
    "(non modifiable une fois envoyée), établissez un avoir et une nouvelle facture"
)


def rejection_advice(code: str) -> str:
    """The report's advice after a Chorus Pro rejection of status `code`."""
    if code == REJECTED_ROUTING:
        return ADVICE_AFTER_04
    if code == REJECTED_OTHER:
        return ADVICE_AFTER_05
    return ADVICE_AFTER_FLOW_REJECTION


UNCHANGED_AFTER_04 = (
    "rejetée par Chorus Pro pour ses données d'acheminement (04) et rien n'a changé depuis dans "
    "la fiche du client (code service, SIRET…) : corrigez-la puis relancez ; rien n'a été déposé"
)

#: Why a version of the document exists (`documents.reason`).
ARCHIVED_AT_DEPOSIT = "archivée au dépôt Chorus (envoyée quand l'archivage était désactivé)"
RENEWED_AFTER_04 = (
    "nouveau document déposé après le rejet Chorus 04 (données d'acheminement corrigées)"
)


@dataclasses.dataclass(frozen=True)
class _Archived:
    id: int
    version: int
    location: str
    sha256: str
    deposited_at: datetime | None


class _Server:
    """The SFTP session, opened on first use and once per chunk."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self._session: Any = None

    def upload(self, name: str, data: bytes) -> str:
        if self._session is None:
            from postier.delivery.chorus_sftp import ChorusSftp

            if self.env.chorus_sftp is None:
                raise DeliveryError(NO_SERVER)
            session = ChorusSftp(self.env.chorus_sftp)
            session.open()
            self._session = session
        return str(self._session.upload(name, data))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def collect_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    """Deposit the chunk's invoices on Chorus Pro in one EDI flow (see the module docstring)."""
    settings = load_settings(conn)
    seller = settings.seller()
    deposit = settings.demat_chorus
    # Every step below commits on its own: end the caller's read-only transaction first.
    conn.commit()
    if deposit and env.chorus_sftp is None:
        with conn.transaction():
            record_outcomes(conn, run.id, [ItemOutcome(i, FAILED, NO_SERVER) for i in ids])
        conn.commit()
        return
    server = _Server(env)
    try:
        for flow_id in _recorded_flows(conn, ids):
            _deposit(conn, run, flow_id, server)
        valid = _check(conn, run, seller, _pending(conn, run.id, ids))
        todo = _pending(conn, run.id, valid)
        if todo:
            recorded = _record_flow(env, conn, run, settings, todo)
            if recorded is not None:
                _deposit(conn, run, recorded, server)
    except ConfigurationError as error:
        # Retrying cannot help (codes, host key, login): said in the report, invoice by invoice.
        # A flow already recorded stays `preparee` and is deposited by the next run.
        conn.rollback()
        with conn.transaction():
            left = _pending(conn, run.id, ids)
            record_outcomes(conn, run.id, [ItemOutcome(i, FAILED, str(error)) for i in left])
        conn.commit()
    finally:
        server.close()


def _pending(conn: psycopg.Connection, run_id: int, ids: Sequence[int]) -> list[int]:
    rows = conn.execute(
        "SELECT invoice_id FROM run_items WHERE run_id = %s AND invoice_id = ANY(%s) "
        "AND status = %s ORDER BY position",
        (run_id, list(ids), PENDING),
    ).fetchall()
    return [r[0] for r in rows]


def _recorded_flows(conn: psycopg.Connection, ids: Sequence[int]) -> list[int]:
    """Flows recorded but not deposited (an interrupted attempt) holding any of `ids`."""
    rows = conn.execute(
        "SELECT DISTINCT f.id FROM chorus_flows f "
        "JOIN chorus_flow_invoices fi ON fi.flow_id = f.id "
        "WHERE f.status = 'preparee' AND fi.invoice_id = ANY(%s) ORDER BY f.id",
        (list(ids),),
    ).fetchall()
    return [r[0] for r in rows]


def _check(conn: psycopg.Connection, run: Run, seller: Seller, ids: list[int]) -> list[int]:
    """Refuse, before anything leaves, the invoices Chorus Pro would reject; the others' ids."""
    refused: list[ItemOutcome] = []
    valid: list[int] = []
    for invoice in load_invoices(conn, ids):
        problems = chorus_deposit_problems(invoice, seller)
        if problems:
            refused.append(ItemOutcome(invoice.id, FAILED, " ; ".join(problems)))
        else:
            valid.append(invoice.id)
    with conn.transaction():
        record_outcomes(conn, run.id, refused)
    conn.commit()
    return valid


def _record_flow(
    env: Environment, conn: psycopg.Connection, run: Run, settings: Settings, ids: list[int]
) -> int | None:
    """Lock, fetch the signed PDFs, write and record the flow; its id (None: nothing to deposit)."""
    outcomes: list[ItemOutcome] = []
    documents: list[_Document] = []
    flow_id: int | None = None
    with conn.transaction():
        # A flow already 'deposee' while the invoice is no longer deposited means Chorus rejected
        # it (the returns cleared `chorus_deposited_at`): it may go out again in a new flow.
        rows = conn.execute(
            "SELECT i.id, i.number, i.send_state, i.chorus_flow_name, i.chorus_deposited_at, "
            "f.status, i.chorus_status FROM invoices i "
            "LEFT JOIN chorus_flows f ON f.name = i.chorus_flow_name "
            "WHERE i.id = ANY(%s) ORDER BY i.id FOR UPDATE OF i SKIP LOCKED",
            (ids,),
        ).fetchall()
        eligible: list[int] = []
        chorus_status = {r[0]: r[6] for r in rows}
        for invoice_id, _number, state, flow, deposited, flow_status, _status in rows:
            if flow_status == "deposee" and deposited is None:
                flow = None  # rejected by Chorus: deposit again
            if deposited is not None:
                outcomes.append(
                    ItemOutcome(invoice_id, SKIPPED, f"déjà déposée sur Chorus Pro (flux {flow})")
                )
            elif flow is not None:
                outcomes.append(
                    ItemOutcome(invoice_id, SKIPPED, f"déjà dans le flux {flow}, en cours de dépôt")
                )
            elif state != SendState.ENVOYE.value:
                label = SendState(state).label
                outcomes.append(
                    ItemOutcome(
                        invoice_id, SKIPPED, f"état changé depuis la sélection : « {label} »"
                    )
                )
            else:
                eligible.append(invoice_id)
        locked = {r[0] for r in rows}
        outcomes += [
            ItemOutcome(i, SKIPPED, "en cours de traitement par une autre exécution")
            for i in ids
            if i not in locked
        ]
        order = {invoice_id: n for n, invoice_id in enumerate(ids)}
        eligible.sort(key=order.__getitem__)
        latest = _latest_documents(conn, eligible)
        source = _Source(env, conn, run, settings)
        for invoice in load_invoices(conn, eligible):
            try:
                documents.append(
                    source.document(invoice, latest.get(invoice.id), chorus_status[invoice.id])
                )
            except PostierError as error:
                outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
        documents = source.index_archived(documents)
        if documents and not settings.demat_chorus:
            outcomes += [
                ItemOutcome(
                    d.invoice.id, DONE, DEMAT_OFF, run.folder.write(f"{PDF_DIR}/{d.name}", d.pdf)
                )
                for d in documents
            ]
        elif documents:
            flow_id = _insert_flow(conn, run, settings.values, documents)
        record_outcomes(conn, run.id, outcomes)
    conn.commit()
    return flow_id


def _insert_flow(
    conn: psycopg.Connection,
    run: Run,
    settings: dict[str, str | int | bool],
    documents: list[_Document],
) -> int:
    row = conn.execute("SELECT nextval('chorus_flow_sequence')").fetchone()
    assert row is not None
    sequence = int(row[0])
    name = flow_name(
        str(settings.get("CHORUS_CODE_APPLICATION", "")),
        str(settings.get("CHORUS_CODE_PARTENAIRE", "")),
        sequence,
    )
    data = pack([(d.name, d.pdf) for d in documents])
    path = run.folder.write(f"{FLOW_DIR}/{name}", data)
    inserted = conn.execute(
        "INSERT INTO chorus_flows (name, sequence, interface, run_id, file_path, sha256, size, "
        "invoice_count, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            name,
            sequence,
            FACTURX_INTERFACE,
            run.id,
            path,
            hashlib.sha256(data).hexdigest(),
            len(data),
            len(documents),
            run.triggered_by,
        ),
    ).fetchone()
    assert inserted is not None
    flow_id = int(inserted[0])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO chorus_flow_invoices (flow_id, invoice_id, position, file_name, "
            "document_id) VALUES (%s, %s, %s, %s, %s)",
            [(flow_id, d.invoice.id, n, d.name, d.document_id) for n, d in enumerate(documents)],
        )
    conn.execute(
        "UPDATE invoices SET chorus_flow_name = %s WHERE id = ANY(%s)",
        (name, [d.invoice.id for d in documents]),
    )
    log.info("Flux Chorus %s enregistré : %d facture(s)", name, len(documents))
    return flow_id


@dataclasses.dataclass(frozen=True)
class _Document:
    """What one invoice contributes to a flow: its file name in the flow, the signed PDF, and
    the archived document it is (None when archiving is off, or until a new version is indexed)."""

    invoice: Invoice
    name: str
    pdf: bytes
    document_id: int | None


def _latest_documents(conn: psycopg.Connection, ids: list[int]) -> dict[int, _Archived]:
    rows = conn.execute(
        "SELECT DISTINCT ON (invoice_id) invoice_id, id, version, location, sha256, deposited_at "
        "FROM documents WHERE invoice_id = ANY(%s) AND kind = 'facture' AND signed "
        "ORDER BY invoice_id, version DESC",
        (ids,),
    ).fetchall()
    return {r[0]: _Archived(r[1], r[2], r[3], r[4].strip(), r[5]) for r in rows}


class _Source:
    """Where each deposited document comes from: the GED, or a new signed, archived version."""

    def __init__(
        self, env: Environment, conn: psycopg.Connection, run: Run, settings: Settings
    ) -> None:
        self.env, self.conn, self.run, self.settings = env, conn, run, settings
        self.archive = env.archive()
        #: Versions put in the GED and not yet indexed: (invoice id, archived, version, reason).
        self._unindexed: list[tuple[int, Archived, int, str]] = []

    def document(self, invoice: Invoice, latest: _Archived | None, status: str | None) -> _Document:
        name = document_name(invoice.number)
        # Rejected for routing data after this very document was deposited: a new one.
        renew = (
            status == REJECTED_ROUTING and latest is not None and latest.deposited_at is not None
        )
        if latest is not None and not renew:
            return _Document(invoice, name, self._read(invoice, latest), latest.id)
        from postier.documents import render_final_invoice

        if status == REJECTED_ROUTING:
            invoice = _with_customer_routing(invoice)
        seller = self.settings.seller()
        unsigned = render_final_invoice(invoice, seller)
        if renew and latest is not None:
            # The same Factur-X data again would only be rejected again (and fill the GED).
            rejected = self._read(invoice, latest)
            if _facturx_data(unsigned) == _facturx_data(rejected):
                raise InvoiceValidationError(invoice.number, [UNCHANGED_AFTER_04])
        pdf = self.env.signer(seller.name).sign(unsigned)
        if not self.settings.archiving:
            return _Document(invoice, name, pdf, None)
        version = latest.version + 1 if latest is not None else 1
        reason = RENEWED_AFTER_04 if renew else ARCHIVED_AT_DEPOSIT
        self._archive(invoice, pdf, version, reason)
        return _Document(invoice, name, pdf, None)

    def _read(self, invoice: Invoice, archived: _Archived) -> bytes:
        self.env.refuse_demo_fallbacks(ged=True)
        data = self.archive.read(archived.location)
        if hashlib.sha256(data).hexdigest() != archived.sha256:
            raise DeliveryError(
                f"Facture {invoice.number} : le PDF de la GED ne correspond plus à son empreinte "
                "(document modifié ?) : non déposé"
            )
        return data

    def _archive(self, invoice: Invoice, pdf: bytes, version: int, reason: str) -> None:
        self.env.refuse_demo_fallbacks(ged=True)
        key = DocumentArchive.key_for(
            invoice.invoice_date, invoice.customer.code, invoice.number, version=version
        )
        # The invoice row is locked and this version is not indexed: a file already there was
        # left by a rolled-back attempt.
        archived = self.archive.put(key, pdf, replace_unindexed=True)
        self._unindexed.append((invoice.id, archived, version, reason))

    def index_archived(self, documents: list[_Document]) -> list[_Document]:
        """Index the versions archived for the chunk (their `documents` row and `archivage_ged`
        exchange), one statement per table; `documents` with the new versions' ids."""
        if not self._unindexed:
            return documents
        pending, self._unindexed = self._unindexed, []
        self.archive.sync()  # the files durable before the rows that index them commit
        rows = [(i, a.sha256, a.size, a.location, version, why) for i, a, version, why in pending]
        inserted = self.conn.execute(
            "INSERT INTO documents (invoice_id, kind, sha256, size, location, signed, "
            "version, reason) SELECT d.invoice_id, 'facture', d.sha256, d.size, d.location, "
            "true, d.version, d.reason FROM unnest(%s::bigint[], %s::text[], %s::bigint[], "
            "%s::text[], %s::int[], %s::text[]) "
            "AS d(invoice_id, sha256, size, location, version, reason) RETURNING invoice_id, id",
            [list(column) for column in zip(*rows, strict=True)],
        ).fetchall()
        ids = {row[0]: row[1] for row in inserted}
        record_exchanges(
            self.conn,
            (
                Exchange(
                    i,
                    self.run.id,
                    "archivage_ged",
                    "GED",
                    "archivee",
                    _archived_report(a, v, why),
                    self.run.triggered_by,
                )
                for i, a, v, why in pending
            ),
        )
        return [
            dataclasses.replace(d, document_id=ids[d.invoice.id]) if d.invoice.id in ids else d
            for d in documents
        ]


def _archived_report(archived: Archived, version: int, reason: str) -> dict[str, Any]:
    return {
        "emplacement": archived.location,
        "sha256": archived.sha256,
        "version": version,
        "motif": reason,
    }


def _facturx_data(pdf: bytes) -> bytes | None:
    import facturx

    return facturx.get_xml_from_pdf(pdf, check_xsd=False)[1]


def _with_customer_routing(invoice: Invoice) -> Invoice:
    """Routing data belongs to the customer: after a 04 rejection, the customer's (corrected)
    service code replaces the one the invoice carried."""
    service = invoice.customer.chorus_service_code or invoice.chorus_service_code
    return dataclasses.replace(invoice, chorus_service_code=service)


def _deposit(conn: psycopg.Connection, run: Run, flow_id: int, server: _Server) -> None:
    """Upload a recorded flow and mark it deposited, its row locked all along."""
    with conn.transaction():
        _deposit_locked(conn, run, flow_id, server)
    conn.commit()


def _deposit_locked(conn: psycopg.Connection, run: Run, flow_id: int, server: _Server) -> None:
    flow = conn.execute(
        "SELECT name, status, file_path, sha256, sequence FROM chorus_flows "
        "WHERE id = %s FOR UPDATE SKIP LOCKED",
        (flow_id,),
    ).fetchone()
    members = conn.execute(
        "SELECT fi.invoice_id, fi.file_name FROM chorus_flow_invoices fi "
        "WHERE fi.flow_id = %s ORDER BY fi.position",
        (flow_id,),
    ).fetchall()
    member_ids = [m[0] for m in members]
    ours = set(_pending(conn, run.id, member_ids))
    if flow is None or flow[1] == "deposee":
        reason = (
            "flux Chorus en cours de dépôt par un autre lot ou une autre exécution"
            if flow is None
            else f"déjà déposée sur Chorus Pro par une autre exécution (flux {flow[0]})"
        )
        record_outcomes(conn, run.id, [ItemOutcome(i, SKIPPED, reason) for i in ours])
        return
    name, _status, file_path, sha256, sequence = flow
    try:
        # Maybe another run's folder (a flow left `preparee`): any location of the storage.
        data = run.folder.storage.read(file_path)
    except DeliveryError:
        data = b""
    if hashlib.sha256(data).hexdigest() != sha256.strip():
        raise DeliveryError(
            f"fichier du flux Chorus {name} introuvable ou modifié ({file_path}) : "
            "rien n'a été déposé"
        )
    # The PDFs for the clerk's ZIP, taken from the flow itself (also after a retry), written
    # before the upload: once the flow is on Chorus, nothing that can fail stands between it and
    # the database saying so.
    pdfs = dict(unpack(data, single_name=members[0][1]))
    written = {
        invoice_id: run.folder.write(f"{PDF_DIR}/{file_name}", pdfs[file_name])
        for invoice_id, file_name in members
        if invoice_id in ours
    }
    remote = server.upload(name, data)
    conn.execute(
        "UPDATE chorus_flows SET status = 'deposee', deposited_at = now() WHERE id = %s",
        (flow_id,),
    )
    conn.execute(
        "UPDATE documents SET deposited_at = now() WHERE id IN "
        "(SELECT document_id FROM chorus_flow_invoices WHERE flow_id = %s)",
        (flow_id,),
    )
    conn.execute(
        "UPDATE invoices SET chorus_deposited_at = now(), dematerialized = true, "
        "dematerialized_channel = 'chorus' WHERE id = ANY(%s)",
        (member_ids,),
    )
    report = {
        "rapport": "rapport d'export du flux EDI",
        "flux": name,
        "interface": FACTURX_INTERFACE,
        "sequence": sequence,
        "fichier_distant": remote,
        "sha256": sha256.strip(),
        "taille": len(data),
        "factures_du_flux": len(members),
    }
    record_exchanges(
        conn,
        (
            Exchange(
                invoice_id,
                run.id,
                "export_chorus",
                "CHORUS",
                "deposee",
                report | {"document": file_name},
                run.triggered_by,
            )
            for invoice_id, file_name in members
        ),
    )
    outcomes = [
        ItemOutcome(invoice_id, DONE, f"déposée sur Chorus Pro (flux {name})", location)
        for invoice_id, location in written.items()
    ]
    record_outcomes(conn, run.id, outcomes)
    log.info("Flux Chorus %s déposé (%d facture(s))", name, len(members))


def write_zip(conn: psycopg.Connection, run: Run) -> list[str]:
    """Finalize: the ZIP of the run's signed PDFs (selection order), then the flow files of the
    run; the paths, for the report. Nothing when no invoice was processed."""
    rows = conn.execute(
        "SELECT output FROM run_items WHERE run_id = %s AND status = %s AND output IS NOT NULL "
        "ORDER BY position",
        (run.id, DONE),
    ).fetchall()
    storage = run.folder.storage
    packed = 0
    with contextlib.ExitStack() as opened:
        archive: zipfile.ZipFile | None = None
        for (pdf,) in rows:
            if not pdf.endswith(".pdf"):
                continue
            try:
                # Read, not looked for first: one round trip less per PDF on a remote storage.
                data = storage.read(pdf)
            except DeliveryError:
                continue  # gone from the storage: not in the ZIP
            if archive is None:  # the ZIP only once there is a PDF to put in it
                handle = opened.enter_context(run.folder.writer(ZIP_NAME))
                archive = opened.enter_context(
                    zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED)
                )
            archive.writestr(pdf.rsplit("/", 1)[-1], data)
            packed += 1
    if not packed:
        return []
    target = run.folder.file_location(ZIP_NAME)
    flows = conn.execute(
        "SELECT file_path FROM chorus_flows WHERE run_id = %s AND status = 'deposee' ORDER BY id",
        (run.id,),
    ).fetchall()
    log.info("ZIP des factures Chorus : %s (%d PDF)", target, packed)
    return [target] + [r[0] for r in flows]
