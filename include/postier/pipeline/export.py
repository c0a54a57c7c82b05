"""Print-house export (« Export des fichiers d'impression »): like print, delivered as a ZIP.

Each chunk renders its invoices (a real print: edit date and login are stamped); the finalize step
packs the PDFs with an index CSV (file, invoice, customer, postal address lines, page count) into
one ZIP in the run's folder (the storage, `POSTIER_STORAGE_URL`) and drops a copy in the
configured folder (`POSTIER_EXPORT_URL`, any fsspec URL such as `sftp://…`, whose host key
`POSTIER_EXPORT_HOST_KEY` is checked as the storage's is) when there is one.
The ZIP appears under its final name only once complete.
"""

from __future__ import annotations

import csv
import io
import zipfile

import psycopg

from postier.pipeline.context import Environment
from postier.pipeline.runs import Run, RunRef, load_run
from postier.storage import EXPORT, StorageConfig, open_place
from postier.store import runs as run_store
from postier.store.invoices import load_invoices
from postier.store.runs import DONE, ItemOutcome, record_outcomes
from postier.store.settings import load_settings
from postier.store.transitions import stamp_edited

INDEX_COLUMNS = [
    "fichier",
    "facture",
    "client",
    "nom",
    "adresse_1",
    "adresse_2",
    "code_postal",
    "ville",
    "pays",
    "pages",
]


def export_chunk(env: Environment, conn: psycopg.Connection, run: Run, ids: list[int]) -> None:
    from postier.documents import render_invoice

    seller = load_settings(conn).seller()
    outcomes: list[ItemOutcome] = []
    for invoice in load_invoices(conn, ids):
        path = run.folder.write(f"export/{invoice.number}.pdf", render_invoice(invoice, seller))
        outcomes.append(ItemOutcome(invoice.id, DONE, output=path))
    with conn.transaction():
        stamp_edited(conn, [o.invoice_id for o in outcomes], run.triggered_by)
        record_outcomes(conn, run.id, outcomes)


def export_archive(env: Environment, ref: RunRef) -> str | None:
    """Pack the run's PDFs and their index into one ZIP, dropped at the export destination."""
    with env.connect() as conn:
        run = load_run(conn, ref, env.storage)
        ids = list(run_store.run_ids_in_order(conn, run.id))
        rows = []
        for start in range(0, len(ids), 500):
            for invoice in load_invoices(conn, ids[start : start + 500]):
                a = invoice.customer.address
                rows.append(
                    [
                        f"{invoice.number}.pdf",
                        invoice.number,
                        invoice.customer.code,
                        invoice.customer.name,
                        a.line1,
                        a.line2 or "",
                        a.postal_code,
                        a.city,
                        a.country,
                    ]
                )
    if not rows:
        return None
    from pypdf import PdfReader  # only the export's finalize counts pages

    name = f"export-{run.id:06d}.zip"
    index = io.StringIO()
    writer = csv.writer(index, delimiter=";")
    writer.writerow(INDEX_COLUMNS)
    drop = StorageConfig.from_env(place=EXPORT)
    place = open_place(drop) if drop.url else None
    with run.folder.writer(name) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for row in rows:
                pdf = run.folder.read(f"export/{row[0]}")
                archive.writestr(row[0], pdf)
                writer.writerow(row + [len(PdfReader(io.BytesIO(pdf)).pages)])
            archive.writestr("index.csv", index.getvalue().encode("utf-8-sig"))  # Excel-friendly
        if place is None:
            return run.folder.file_location(name)
        # From what was just written, not downloaded back from a remote run storage; published
        # under its final name once complete, like the run's own files.
        handle.seek(0)
        place.upload(place.path(name), handle, place.location(name))
    return place.location(name)  # no login nor password: it goes into the report
