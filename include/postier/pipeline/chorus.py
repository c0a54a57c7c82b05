"""Récupérer les factures à destination de Chorus: signed Factur-X PDFs, one EDI flow per chunk
deposited on the Chorus Pro SFTP server, and a ZIP of the PDFs for the clerk (finalize).

Exactly once, per chunk (each step commits on its own):
1. flows recorded by an earlier attempt and not yet deposited (`preparee`) that hold invoices of
   the chunk are uploaded again, same name, same bytes — Chorus knows a flow by its name;
2. invoices are checked (Chorus rules, seller IBAN) before anything leaves; valid « Prêt » ones
   are sent first (the send path: signed, archived, « Envoyé », immutable);
3. the flow is built, its file written, and recorded with its invoices (`chorus_flows`,
   `invoices.chorus_flow_name`) in one transaction, before the upload;
4. upload (temporary name, then rename), then, in one transaction: flow `deposee`, invoices
   `chorus_deposited_at`, one exchange-log row per invoice, item outcomes.
A crash between 3 and 4 leaves a `preparee` flow that step 1 of the retry (or of a later run,
which selects the same invoices since they are not deposited) finishes. No invoice enters two
flows: step 3 only takes invoices without `chorus_flow_name`, under row locks.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from postier.delivery.archive import DocumentArchive
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
from postier.errors import ConfigurationError, DeliveryError, PostierError
from postier.pipeline.context import Environment
from postier.pipeline.outputs import write_atomically
from postier.pipeline.runs import Run
from postier.store.invoices import load_invoices
from postier.store.runs import DONE, FAILED, PENDING, SKIPPED, ItemOutcome, record_outcomes
from postier.store.settings import load_settings

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
        valid = _check_and_send(env, conn, run, seller, _pending(conn, run.id, ids))
        todo = _pending(conn, run.id, valid)
        if todo:
            recorded = _record_flow(env, conn, run, seller, settings.values, todo, deposit)
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


def _check_and_send(
    env: Environment, conn: psycopg.Connection, run: Run, seller: Seller, ids: list[int]
) -> list[int]:
    """Refuse invalid invoices before anything leaves; send the valid « Prêt » ones first.

    Checking before sending matters: a sent invoice can no longer be corrected.
    """
    from postier.pipeline.sending import send_invoices

    invoices = load_invoices(conn, ids)
    refused: list[ItemOutcome] = []
    valid: list[int] = []
    ready: list[int] = []
    for invoice in invoices:
        problems = chorus_deposit_problems(invoice, seller)
        if problems:
            refused.append(ItemOutcome(invoice.id, FAILED, " ; ".join(problems)))
            continue
        valid.append(invoice.id)
        if invoice.send_state is SendState.PRET:
            ready.append(invoice.id)
    with conn.transaction():
        record_outcomes(conn, run.id, refused)
        if ready:
            send_invoices(env, conn, run, ready)
            # Sent, not deposited yet: still to do, so that a retried chunk deposits them.
            conn.execute(
                "UPDATE run_items SET status = %s, output = NULL WHERE run_id = %s "
                "AND invoice_id = ANY(%s) AND status = %s",
                (PENDING, run.id, ready, DONE),
            )
    conn.commit()
    return valid


def _record_flow(
    env: Environment,
    conn: psycopg.Connection,
    run: Run,
    seller: Seller,
    settings: dict[str, str | int | bool],
    ids: list[int],
    deposit: bool,
) -> int | None:
    """Lock, fetch the signed PDFs, write and record the flow; its id (None: nothing to deposit)."""
    outcomes: list[ItemOutcome] = []
    documents: list[tuple[Invoice, str, bytes]] = []
    flow_id: int | None = None
    with conn.transaction():
        # A flow already 'deposee' while the invoice is no longer deposited means Chorus rejected
        # it (the returns cleared `chorus_deposited_at`): it may go out again in a new flow.
        rows = conn.execute(
            "SELECT i.id, i.number, i.send_state, i.chorus_flow_name, i.chorus_deposited_at, "
            "f.status FROM invoices i LEFT JOIN chorus_flows f ON f.name = i.chorus_flow_name "
            "WHERE i.id = ANY(%s) ORDER BY i.id FOR UPDATE OF i SKIP LOCKED",
            (ids,),
        ).fetchall()
        eligible: list[int] = []
        for invoice_id, _number, state, flow, deposited, flow_status in rows:
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
        sources = _archived(conn, eligible)
        archive = DocumentArchive(env.archive_url)
        for invoice in load_invoices(conn, eligible):
            try:
                pdf = _signed_pdf(env, archive, invoice, seller, sources.get(invoice.id))
            except PostierError as error:
                outcomes.append(ItemOutcome(invoice.id, FAILED, str(error)))
                continue
            documents.append((invoice, document_name(invoice.number), pdf))
        pdf_dir = run.output_dir / PDF_DIR
        if documents and not deposit:
            outcomes += [
                ItemOutcome(inv.id, DONE, DEMAT_OFF, write_atomically(pdf_dir / name, pdf))
                for inv, name, pdf in documents
            ]
        elif documents:
            flow_id = _insert_flow(conn, run, settings, documents)
        record_outcomes(conn, run.id, outcomes)
    conn.commit()
    return flow_id


def _insert_flow(
    conn: psycopg.Connection,
    run: Run,
    settings: dict[str, str | int | bool],
    documents: list[tuple[Invoice, str, bytes]],
) -> int:
    row = conn.execute("SELECT nextval('chorus_flow_sequence')").fetchone()
    assert row is not None
    sequence = int(row[0])
    name = flow_name(
        str(settings.get("CHORUS_CODE_APPLICATION", "")),
        str(settings.get("CHORUS_CODE_PARTENAIRE", "")),
        sequence,
    )
    data = pack([(file_name, pdf) for _, file_name, pdf in documents])
    path = write_atomically(run.output_dir / FLOW_DIR / name, data)
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
            "INSERT INTO chorus_flow_invoices (flow_id, invoice_id, position, file_name) "
            "VALUES (%s, %s, %s, %s)",
            [(flow_id, inv.id, n, file_name) for n, (inv, file_name, _) in enumerate(documents)],
        )
    conn.execute(
        "UPDATE invoices SET chorus_flow_name = %s WHERE id = ANY(%s)",
        (name, [inv.id for inv, _, _ in documents]),
    )
    log.info("Flux Chorus %s enregistré : %d facture(s)", name, len(documents))
    return flow_id


def _archived(conn: psycopg.Connection, ids: list[int]) -> dict[int, tuple[str, str]]:
    rows = conn.execute(
        "SELECT invoice_id, location, sha256 FROM documents "
        "WHERE invoice_id = ANY(%s) AND kind = 'facture' AND signed",
        (ids,),
    ).fetchall()
    return {r[0]: (r[1], r[2].strip()) for r in rows}


def _signed_pdf(
    env: Environment,
    archive: DocumentArchive,
    invoice: Invoice,
    seller: Seller,
    source: tuple[str, str] | None,
) -> bytes:
    """The signed Factur-X kept in the GED when archived (the legal copy); otherwise rendered
    and signed now."""
    if source is not None:
        location, sha256 = source
        data = archive.read(location)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DeliveryError(
                f"Facture {invoice.number} : le PDF de la GED ne correspond plus à son empreinte "
                "(document modifié ?) : non déposé"
            )
        return data
    from postier.documents import render_final_invoice

    return env.signer(seller.name).sign(render_final_invoice(invoice, seller))


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
        data = Path(file_path).read_bytes()
    except OSError:
        data = b""
    if hashlib.sha256(data).hexdigest() != sha256.strip():
        raise DeliveryError(
            f"fichier du flux Chorus {name} introuvable ou modifié ({file_path}) : "
            "rien n'a été déposé"
        )
    remote = server.upload(name, data)
    conn.execute(
        "UPDATE chorus_flows SET status = 'deposee', deposited_at = now() WHERE id = %s",
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
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exchanges (invoice_id, run_id, kind, partner, status, report, by) "
            "VALUES (%s, %s, 'export_chorus', 'CHORUS', 'deposee', %s, %s)",
            [
                (invoice_id, run.id, Jsonb(report | {"document": file_name}), run.triggered_by)
                for invoice_id, file_name in members
            ],
        )
    # The PDFs for the clerk's ZIP, taken from the flow itself (also after a retry).
    pdfs = dict(unpack(data, single_name=members[0][1]))
    outcomes = [
        ItemOutcome(
            invoice_id,
            DONE,
            f"déposée sur Chorus Pro (flux {name})",
            write_atomically(run.output_dir / PDF_DIR / file_name, pdfs[file_name]),
        )
        for invoice_id, file_name in members
        if invoice_id in ours
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
    pdfs = [Path(r[0]) for r in rows if r[0].endswith(".pdf") and Path(r[0]).exists()]
    if not pdfs:
        return []
    target = run.output_dir / ZIP_NAME
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for pdf in pdfs:
            archive.write(pdf, arcname=pdf.name)
    tmp.replace(target)
    flows = conn.execute(
        "SELECT file_path FROM chorus_flows WHERE run_id = %s AND status = 'deposee' ORDER BY id",
        (run.id,),
    ).fetchall()
    log.info("ZIP des factures Chorus : %s (%d PDF)", target, len(pdfs))
    return [str(target)] + [r[0] for r in flows]
