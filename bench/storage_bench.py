"""Benchmark of the shared storage: what an `sftp://` run storage and GED add per invoice.

    .venv/bin/python bench/storage_bench.py --invoices 300

In the same run, on the same synthetic invoices (one core):
- the document step: `render_final_invoice` + `Signer.sign` (key loaded once);
- each invoice's run file (`preparees/<n>.pdf`, as prepare writes it) and its GED copy (as send
  archives it), written through `postier.storage` / `DocumentArchive` first to local folders,
  then to the project's real local sshd (`delivery/local_sftp.py`, as the tests use);
- the extra per invoice of `sftp://` over local, wall-clock and CPU (this process + the sshd
  processes serving it), and as a share of the document step.
Rounds alternate local and SFTP; each figure is the median of the rounds (a shared machine).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from process_cpu import tree_cpu

from postier.delivery.archive import DocumentArchive
from postier.delivery.local_sftp import SshServer, start_sshd, stop_sshd
from postier.documents import Signer, SigningConfig, render_final_invoice
from postier.documents.samples import sample_identity, sample_invoice, sample_seller
from postier.domain.models import Invoice
from postier.storage import GED, StorageConfig, open_storage


def write_all(
    pdfs: list[tuple[Invoice, bytes]], storage: StorageConfig, ged: StorageConfig, home: Path
) -> tuple[float, float, float]:
    """Seconds (wall, this process's CPU, run files' share of wall) for each invoice's run file
    and GED copy."""
    folder = open_storage(storage, home).run_folder(time.time_ns() % 1_000_000, "bench")
    archive = DocumentArchive(ged.url, ged)
    # Connected before timing: one session per task, opened once.
    folder.write("ouverture", b"")
    archive.put("ouverture.pdf", b"", replace_unindexed=True)
    wall, cpu, files = time.perf_counter(), time.process_time(), 0.0
    for invoice, pdf in pdfs:
        started = time.perf_counter()
        folder.write(f"preparees/{invoice.number}.pdf", pdf)
        files += time.perf_counter() - started
        key = DocumentArchive.key_for(invoice.invoice_date, invoice.customer.code, invoice.number)
        archive.put(key, pdf, replace_unindexed=True)
    figures = time.perf_counter() - wall, time.process_time() - cpu, files
    for place in (folder.storage, archive):
        client = getattr(place.fs, "client", None)  # an SFTP session: closed, sshd's CPU reaped
        if client is not None:
            client.close()
    return figures


def one_round(
    pdfs: list[tuple[Invoice, bytes]], server: SshServer, base: Path, round_: int
) -> dict[str, float]:
    local = base / f"local-{round_}"
    local_storage = StorageConfig(url=str(local / "stockage"))
    local_ged = StorageConfig(url=str(local / "ged"), place=GED)
    wall, cpu, files = write_all(pdfs, local_storage, local_ged, base / "home")
    remote = server.base / "bench" / str(round_)
    (remote / "stockage").mkdir(parents=True)
    (remote / "ged").mkdir()
    sftp_storage = StorageConfig.from_env(server.storage_environment(remote / "stockage"))
    sftp_ged = StorageConfig.from_env(
        server.storage_environment(remote / "ged", prefix="POSTIER_GED"), place=GED
    )
    before = tree_cpu(server.process.pid)
    s_wall, s_cpu, s_files = write_all(pdfs, sftp_storage, sftp_ged, base / "home")
    time.sleep(0.5)  # sshd reaps the closed sessions
    server_cpu = tree_cpu(server.process.pid) - before
    n = len(pdfs)
    return {
        "local_ms": wall / n * 1000,
        "sftp_ms": s_wall / n * 1000,
        "extra_ms": (s_wall - wall) / n * 1000,
        "files_extra_ms": (s_files - files) / n * 1000,
        "ged_extra_ms": ((s_wall - s_files) - (wall - files)) / n * 1000,
        "cpu_extra_ms": (s_cpu + server_cpu - cpu) / n * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="postier-storage-bench-"))
    server = start_sshd(base / "sshd")
    try:
        seller = sample_seller()
        identity = sample_identity()
        signer = Signer(SigningConfig(identity.pkcs12, identity.passphrase, None))
        invoices = [sample_invoice(i) for i in range(args.invoices)]
        signer.sign(render_final_invoice(invoices[0], seller))  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        pdfs = [(inv, signer.sign(render_final_invoice(inv, seller))) for inv in invoices]
        document_ms = (time.perf_counter() - wall) / len(pdfs) * 1000
        document_cpu_ms = (time.process_time() - cpu) / len(pdfs) * 1000
        rounds = [one_round(pdfs, server, base, r) for r in range(args.rounds)]
    finally:
        stop_sshd(server)
        shutil.rmtree(base, ignore_errors=True)
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    cpu_share = figures["cpu_extra_ms"] / document_cpu_ms
    print(f"\nStockage sftp:// (sshd local) contre dossiers locaux, {args.invoices} factures")
    print(f"| mesure (par facture, médiane de {args.rounds} tours) | valeur |")
    print("|---|---:|")
    for label, value in (
        ("étape documentaire (rendu + signature), ms", f"{document_ms:.1f}"),
        ("fichier de lot + GED, local, ms", f"{figures['local_ms']:.2f}"),
        ("fichier de lot + GED, sftp://, ms", f"{figures['sftp_ms']:.2f}"),
        ("surcoût sftp:// : fichier de lot, ms", f"{figures['files_extra_ms']:.2f}"),
        ("surcoût sftp:// : GED, ms", f"{figures['ged_extra_ms']:.2f}"),
        ("surcoût sftp:// total, ms (cible ≤ 5)", f"{figures['extra_ms']:.2f}"),
        ("surcoût / étape documentaire", f"{figures['extra_ms'] / document_ms:.2f}"),
        ("surcoût CPU (processus + sshd), ms", f"{figures['cpu_extra_ms']:.2f}"),
        ("surcoût CPU / CPU de l'étape documentaire", f"{cpu_share:.2f}"),
    ):
        print(f"| {label} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
