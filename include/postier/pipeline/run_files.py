"""The files a run produced, as the clerk downloads them: listed from the run's own folder only.

A file is named by its path relative to the run's folder, and served only if that exact name is
in the folder's listing and its real path (symlinks resolved) stays inside the folder: no `..`,
no absolute path, no link pointing elsewhere reaches anything but the run's own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: What each file of a run folder is, for the clerk (by name or sub-folder).
KINDS: tuple[tuple[str, str], ...] = (
    ("impression.pdf", "Fichier d'impression (toutes les factures)"),
    ("apercu.pdf", "Aperçu (toutes les factures, filigrane APERÇU)"),
    ("traites.pdf", "Fichier d'impression des traites"),
    ("rapport.md", "Rapport (Markdown)"),
    ("rapport.json", "Rapport (JSON)"),
    ("factures/", "Facture imprimée"),
    ("apercus/", "Aperçu d'une facture"),
    ("traites/", "Traites d'une facture"),
    ("preparees/", "Facture préparée pour l'envoi"),
    ("export/", "Facture exportée pour l'imprimeur"),
    ("export-", "Export pour l'imprimeur (ZIP)"),
    ("factures-chorus.zip", "ZIP Chorus Pro (factures Factur-X signées)"),
    ("chorus/flux/", "Flux Chorus Pro déposé"),
    ("chorus/", "Facture Factur-X signée pour Chorus Pro"),
)


@dataclass(frozen=True)
class RunFile:
    name: str  # relative to the run's folder, with "/" separators
    size: int
    kind: str


def _kind(name: str) -> str:
    for prefix, label in KINDS:
        if name == prefix or (prefix.endswith(("/", "-")) and name.startswith(prefix)):
            return label
    return "Fichier produit"


def _sort_key(name: str) -> tuple[int, str]:
    return (name.count("/"), name)


def list_run_files(folder: Path) -> list[RunFile]:
    """Every finished file under the run's folder (no `.part` left by a crash), top level first."""
    if not folder.is_dir():
        return []
    root = folder.resolve()
    found: list[RunFile] = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.endswith(".part"):
            continue
        if not path.resolve().is_relative_to(root):
            continue
        name = path.relative_to(folder).as_posix()
        found.append(RunFile(name, path.stat().st_size, _kind(name)))
    return sorted(found, key=lambda f: _sort_key(f.name))


def run_file(folder: Path, name: str) -> Path | None:
    """The file `name` of the run's folder, or None for anything that is not one of its files."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    path = folder.joinpath(*parts)
    root = folder.resolve()
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file() or real.name.endswith(".part"):
        return None
    return real
