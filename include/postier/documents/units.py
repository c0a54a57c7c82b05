"""ERP units → UN/ECE Recommendation 20 codes and printed labels, from a table in data
(`include/templates/documents/units.toml`), so that the XML and the printed page agree."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache

from postier.documents.texts import DOCUMENTS_TEMPLATES

UNITS_FILE = DOCUMENTS_TEMPLATES / "units.toml"


@dataclass(frozen=True)
class Unit:
    code: str  # UN/ECE Recommendation 20 (or 21 with the X prefix)
    label: str  # what the invoice prints


@cache
def units() -> dict[str, Unit]:
    with UNITS_FILE.open("rb") as handle:
        table = tomllib.load(handle)["units"]
    return {erp.upper(): Unit(entry["code"], entry["label"]) for erp, entry in table.items()}


def unit_for(erp_unit: str) -> Unit | None:
    """The unit of the table for an ERP unit (case and spaces ignored); None when unknown."""
    return units().get(erp_unit.strip().upper())


def unit_label(erp_unit: str) -> str:
    """The printed label; an unknown unit prints as the ERP has it (a print or a preview must
    still show the invoice; the final document refuses it)."""
    unit = unit_for(erp_unit)
    return unit.label if unit else erp_unit
