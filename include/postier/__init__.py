"""Postier: print, sign, archive and dispatch the customer invoices of a French ERP."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Root of `include/`: SQL migrations and templates live beside the package.
INCLUDE_DIR = Path(__file__).resolve().parent.parent
SQL_DIR = INCLUDE_DIR / "sql"
TEMPLATES_DIR = INCLUDE_DIR / "templates"
