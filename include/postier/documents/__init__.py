"""Invoice and bill-of-exchange PDFs (reportlab), Factur-X PDF/A-3, PAdES signing (pyHanko).

No Airflow here. Callers pass invoices in and get bytes or file paths out; print runs write
files and return a small `PrintFileSummary` (never PDF bytes in XCom).
"""

from __future__ import annotations

from postier.documents.bills_of_exchange import Rib, bills_of, render_bills, split_french_iban
from postier.documents.facturx import (
    build_facturx_xml,
    check_facturx_xml,
    check_invoice_fields,
    checked_facturx_xml,
    render_final_invoice,
)
from postier.documents.invoice_pdf import render_invoice
from postier.documents.print_files import (
    PrintFileSummary,
    write_bills_print_file,
    write_bills_print_stream,
    write_print_file,
    write_print_stream,
)
from postier.documents.signing import (
    SignatureCheck,
    Signer,
    SigningConfig,
    VerificationResult,
    verify_pdf,
)

__all__ = [
    "PrintFileSummary",
    "Rib",
    "SignatureCheck",
    "Signer",
    "SigningConfig",
    "VerificationResult",
    "bills_of",
    "build_facturx_xml",
    "check_facturx_xml",
    "check_invoice_fields",
    "checked_facturx_xml",
    "render_bills",
    "render_final_invoice",
    "render_invoice",
    "split_french_iban",
    "verify_pdf",
    "write_bills_print_file",
    "write_bills_print_stream",
    "write_print_file",
    "write_print_stream",
]
