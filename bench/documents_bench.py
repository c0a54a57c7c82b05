"""Benchmark of the documents step (render + Factur-X + PAdES signature), one core.

    .venv/bin/python bench/documents_bench.py --invoices 200 --print-invoices 10000

Compares, on the same synthetic invoices:
- ours: as a chunk task makes its documents: the chunk's Factur-X XML first, in one pass
  (`facturx_first`), then `render_final_invoice(..., xml=)` + `Signer.sign` (key loaded once);
  also one invoice at a time (its XML made between two renders), for comparison;
- naive: `render_invoice`, then pyHanko `sign_pdf` with `SimpleSigner.load_pkcs12` per document
  and default options;
- the limit: `render_invoice` + one raw RSA-2048 signature of its bytes (cryptography);
- WeasyPrint rendering an equivalent HTML invoice, when installed;
and measures the peak memory (VmHWM, in a fresh subprocess) of a streamed print file.

Each step is measured in this process's CPU time (`time.process_time`, the process pinned to one
core): every step first runs once over its whole sample (fonts, XSD, key, imports, caches), then
`--rounds` rounds run every step in turn, each round starting one step further on, so that no
step always pays first or always follows the same one; a step's figure is the median of its
rounds, printed with its spread (slowest / fastest round). The naive way and WeasyPrint, 10–25×
slower, run on `--slow-invoices` of the invoices, spread evenly over them.
"""

from __future__ import annotations

import argparse
import gc
import html
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from postier.documents import (
    Signer,
    SigningConfig,
    build_facturx_xml,
    check_facturx_xml,
    check_invoice_fields,
    render_final_invoice,
    render_invoice,
)
from postier.documents.samples import sample_identity, sample_invoice, sample_seller
from postier.domain.models import Invoice, Seller
from postier.domain.money import format_amount, format_rate
from postier.pipeline.runs import facturx_first
from postier.store.runs import ItemOutcome


@dataclass
class Step:
    """One measured step: its invoices and, per round, its CPU seconds per invoice."""

    label: str
    invoices: list[Invoice]
    run: Callable[[Invoice], object] | None = None
    #: Or the whole sample at once (a chunk's way), instead of `run` on each invoice.
    run_all: Callable[[list[Invoice]], object] | None = None
    rounds: list[float] = field(default_factory=list)

    def once(self) -> float:
        """One pass over the invoices: this process's CPU seconds per invoice."""
        gc.collect()  # no step collects the garbage the previous one left
        start = time.process_time()
        if self.run_all is not None:
            self.run_all(self.invoices)
        else:
            assert self.run is not None
            for invoice in self.invoices:
                self.run(invoice)
        return (time.process_time() - start) / len(self.invoices)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def spread(self) -> float:
        """Slowest round / fastest."""
        return max(self.rounds) / min(self.rounds)

    def print(self) -> None:
        print(
            f"  {self.label:<44} {self.median * 1000:8.2f} ms/facture "
            f"(écart {self.spread:.2f}×, {len(self.invoices)} factures par tour)"
        )


def measure(steps: list[Step], rounds: int) -> None:
    """Warm every step up on its whole sample once, then `rounds` rounds of every step in turn,
    round r starting at step r (modulo their number)."""
    for step in steps:
        step.once()
    for number in range(rounds):
        for index in range(len(steps)):
            step = steps[(number + index) % len(steps)]
            step.rounds.append(step.once())


def invoice_html(invoice: Invoice, seller: Seller) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(line.description)}</td><td>{line.quantity}</td>"
        f"<td>{html.escape(line.unit)}</td><td>{format_amount(line.unit_price, None)}</td>"
        f"<td>{format_rate(line.vat_rate)}</td><td>{format_amount(line.net_amount, None)}</td></tr>"
        for line in invoice.lines
    )
    vat = "".join(
        f"<tr><td>{format_rate(v.rate)}</td><td>{format_amount(v.base)}</td>"
        f"<td>{format_amount(v.amount)}</td></tr>"
        for v in invoice.vat_breakdown()
    )
    return f"""<html><head><style>
    @page {{ size: A4; margin: 15mm; @bottom-right {{ content: "Page " counter(page) " / "
      counter(pages); font-size: 8pt; }} }}
    body {{ font-family: 'DejaVu Sans'; font-size: 8.5pt; }}
    table {{ width: 100%; border-collapse: collapse; }} thead {{ display: table-header-group; }}
    td, th {{ border-bottom: 0.25pt solid #bbb; padding: 2pt; }}
    </style></head><body>
    <h2>{html.escape(seller.name)}</h2><p>{html.escape(seller.legal_form)} au capital de
    {html.escape(seller.capital)} — SIRET {seller.siret} — {html.escape(seller.rcs)}</p>
    <h1 style="text-align:right">FACTURE {invoice.number}</h1>
    <p>{html.escape(invoice.customer.name)}<br>{"<br>".join(invoice.customer.address.lines())}</p>
    <table><thead><tr><th>Désignation</th><th>Qté</th><th>Unité</th><th>P.U. HT</th>
    <th>TVA</th><th>Montant HT</th></tr></thead><tbody>{rows}</tbody></table>
    <table>{vat}</table><p><b>Net à payer {format_amount(invoice.total_gross)}</b></p>
    <p style="font-size:7pt">Pénalités de retard : {html.escape(seller.late_penalty_rate)} ;
    indemnité forfaitaire pour frais de recouvrement de 40 €.</p></body></html>"""


def print_file_peak(count: int) -> tuple[float, int, float]:
    """Peak RSS (MiB), pages and seconds of a print file of `count` invoices, in a subprocess."""
    code = (
        "import resource, sys, time, tempfile, os\n"
        "from postier.documents import write_print_file\n"
        "from postier.documents.samples import sample_invoices, sample_seller\n"
        "out = os.path.join(tempfile.mkdtemp(), 'impression.pdf')\n"
        "t = time.perf_counter()\n"
        f"s = write_print_file(sample_invoices({count}), sample_seller(), out)\n"
        "d = time.perf_counter() - t\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(hwm, s.pages, d, "
        "os.path.getsize(out))\n"
        "os.remove(out)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(output[0]) / 1024, int(output[1]), float(output[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--print-invoices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per step (median kept)")
    parser.add_argument(
        "--slow-invoices", type=int, default=20, help="invoices per round, naive and WeasyPrint"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    seller = sample_seller()
    invoices = [sample_invoice(index) for index in range(args.invoices)]
    identity = sample_identity()
    config = SigningConfig(identity.pkcs12, identity.passphrase)
    folder = Path(tempfile.mkdtemp())
    p12_path = folder / "signing.p12"
    p12_path.write_bytes(identity.pkcs12)
    lines = sum(len(invoice.lines) for invoice in invoices) / len(invoices)
    print(
        f"{args.invoices} factures synthétiques ({lines:.1f} lignes en moyenne), un cœur, "
        f"temps CPU : médiane de {args.rounds} tours alternés après un tour de chauffe",
        flush=True,
    )

    signer = Signer(config)

    def ours(invoices: list[Invoice]) -> None:
        outcomes: list[ItemOutcome] = []
        cii = facturx_first(invoices, seller, outcomes)
        assert not outcomes, outcomes
        for invoice in invoices:
            signer.sign(render_final_invoice(invoice, seller, xml=cii[invoice.id]))

    def ours_one_by_one(invoice: Invoice) -> bytes:
        return signer.sign(render_final_invoice(invoice, seller))

    def naive(invoice: Invoice) -> bytes:
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import signers

        pdf = render_invoice(invoice, seller)
        key = signers.SimpleSigner.load_pkcs12(str(p12_path), passphrase=identity.passphrase)
        out = signers.sign_pdf(
            IncrementalPdfFileWriter(io.BytesIO(pdf)),
            signers.PdfSignatureMetadata(field_name="Signature1"),
            signer=key,
        )
        return bytes(out.getvalue())

    raw_key, _, _ = pkcs12.load_key_and_certificates(identity.pkcs12, identity.passphrase)
    assert isinstance(raw_key, rsa.RSAPrivateKey)

    def limit(invoice: Invoice) -> bytes:
        pdf = render_invoice(invoice, seller)
        return raw_key.sign(pdf, padding.PKCS1v15(), hashes.SHA256())

    finals = {id(i): render_final_invoice(i, seller) for i in invoices}
    plains = {id(i): render_invoice(i, seller) for i in invoices}

    def cii(invoice: Invoice) -> None:
        check_invoice_fields(invoice, seller)
        check_facturx_xml(build_facturx_xml(invoice, seller), invoice.number)

    count = min(args.slow_invoices, len(invoices))
    slow = [invoices[k * len(invoices) // count] for k in range(count)]
    s_ours = Step("nous : rendu + Factur-X + signature", invoices, run_all=ours)
    s_one = Step("  (nous, facture par facture)", invoices, ours_one_by_one)
    s_naive = Step("naïf : rendu + load_pkcs12 + sign_pdf", slow, naive)
    s_limit = Step("limite : rendu + une signature RSA brute", invoices, limit)
    s_render = Step("  (rendu seul, sans Factur-X)", invoices, lambda i: render_invoice(i, seller))
    s_final = Step("  (rendu Factur-X seul)", invoices, lambda i: render_final_invoice(i, seller))
    s_cii = Step("  (XML CII seul : contrôles + XSD)", invoices, cii)
    s_pades = Step("  (signature PAdES seule)", invoices, lambda i: signer.sign(finals[id(i)]))
    s_rsa = Step(
        "  (signature RSA brute seule)",
        invoices,
        lambda i: raw_key.sign(plains[id(i)], padding.PKCS1v15(), hashes.SHA256()),
    )
    steps = [s_ours, s_one, s_naive, s_limit, s_render, s_final, s_cii, s_pades, s_rsa]
    s_weasy: Step | None = None
    try:
        from weasyprint import HTML

        s_weasy = Step(
            "WeasyPrint : rendu HTML → PDF seul",
            slow,
            lambda i: HTML(string=invoice_html(i, seller)).write_pdf(),
        )
        steps.append(s_weasy)
    except ImportError:
        print("  WeasyPrint absent : comparaison ignorée")
    measure(steps, args.rounds)
    print()
    for step in steps:
        step.print()
    t_ours, t_naive, t_limit = s_ours.median, s_naive.median, s_limit.median
    t_render, t_final, t_cii = s_render.median, s_final.median, s_cii.median
    t_pades, t_rsa = s_pades.median, s_rsa.median
    t_weasy = s_weasy.median if s_weasy is not None else None
    # The fraction of the limit in each round (both steps ran in the same round).
    fractions = [lim / our for lim, our in zip(s_limit.rounds, s_ours.rounds, strict=True)]

    print(f"\nfichier d'impression de {args.print_invoices} factures (sous-processus)…", flush=True)
    peak, pages, seconds = print_file_peak(args.print_invoices)
    small = max(10, args.print_invoices // 10)
    peak_small, _, _ = print_file_peak(small)
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\n| mesure | valeur | cible |")
    print("|---|---|---|")
    print(f"| naïf / nous (accélération) | {t_naive / t_ours:.1f}× | ≥ 10× |")
    print(
        f"| limite / nous (fraction de la limite) | {t_limit / t_ours:.2f} "
        f"(par tour : {min(fractions):.2f}–{max(fractions):.2f}) | ≥ 0,8 |"
    )
    print(f"| limite / nous facture par facture | {t_limit / s_one.median:.2f} | — |")
    if t_weasy is not None:
        print(f"| WeasyPrint seul / nous (complet) | {t_weasy / t_ours:.1f}× | — |")
    print(f"| Factur-X + signature / rendu seul | {t_ours / t_render:.2f}× | — |")
    print(f"| Factur-X seul / rendu seul | {t_final / t_render:.2f}× | — |")
    print(
        f"| dont XML CII (construction, contrôles, XSD) / rendu seul | {t_cii / t_render:.2f} | — |"
    )
    print(f"| signature PAdES / signature RSA brute | {t_pades / t_rsa:.2f}× | — |")
    print(
        f"| mémoire crête, impression {args.print_invoices} factures ({pages} pages, "
        f"{seconds:.0f} s) | {peak:.0f} Mio | constante |"
    )
    print(f"| mémoire crête, impression {small} factures | {peak_small:.0f} Mio | — |")
    print(f"| (ce processus de benchmark) | {own_rss:.0f} Mio | — |")


if __name__ == "__main__":
    main()
