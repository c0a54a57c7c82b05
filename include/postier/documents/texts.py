"""Fixed document texts (legal mentions, labels, bill wording) from include/templates/documents."""

from __future__ import annotations

import tomllib
from functools import cache
from typing import Any

from postier import TEMPLATES_DIR

DOCUMENTS_TEMPLATES = TEMPLATES_DIR / "documents"


class Texts:
    """One TOML file of texts: `texts["section"]["key"]`, `texts.format(section, key, **values)`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, section: str) -> dict[str, str]:
        section_data: dict[str, str] = self._data[section]
        return section_data

    def format(self, section: str, key: str, **values: object) -> str:
        return self._data[section][key].format(**values)


@cache
def load_texts(name: str) -> Texts:
    """`load_texts("invoice")` reads `include/templates/documents/invoice.toml` once."""
    with (DOCUMENTS_TEMPLATES / f"{name}.toml").open("rb") as handle:
        return Texts(tomllib.load(handle))
