"""The files a run produced, as the clerk downloads them: listed from the run's own folder only,
in the storage (`POSTIER_STORAGE_URL`) every task wrote them to.

A file is named by its path relative to the run's folder, and served only if that exact name is
in its folder's listing as a file (not a link) and, on a local disk, its real path stays inside
the run's folder: no `..`, no absolute path, no link reaches anything but the run's own files.
"""

from __future__ import annotations

from dataclasses import dataclass

from postier.storage import RunFolder

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


def list_run_files(folder: RunFolder) -> list[RunFile]:
    """Every finished file under the run's folder (no `.part` left by a crash), top level first."""
    found = [RunFile(name, size, _kind(name)) for name, size in folder.files().items()]
    return sorted(found, key=lambda f: _sort_key(f.name))


def run_file(folder: RunFolder, name: str) -> str | None:
    """`name` if it is one of the run's files (to `folder.open`), else None."""
    return folder.file(name)
