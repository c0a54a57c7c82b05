"""`postier ged verify`: re-read every archived document, check its hash and its signature."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from postier.delivery.archive import DocumentArchive
from postier.errors import PostierError
from postier.pipeline.context import Environment


@dataclass(frozen=True)
class ArchiveProblem:
    invoice: str
    location: str
    problem: str


@dataclass(frozen=True)
class ArchiveCheck:
    checked: int
    problems: tuple[ArchiveProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(env: Environment, trust_roots: list[bytes] | None = None) -> ArchiveCheck:
    archive = env.archive()
    problems: list[ArchiveProblem] = []
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT i.number, d.location, d.sha256, d.signed FROM documents d "
            "JOIN invoices i ON i.id = d.invoice_id ORDER BY d.id"
        ).fetchall()
    for number, location, sha256, signed in rows:
        try:
            problem = document_problem(archive, location, sha256, signed, trust_roots)
        except (PostierError, OSError) as error:
            problem = f"document manquant ({error})"
        if problem:
            problems.append(ArchiveProblem(number, location, problem))
    return ArchiveCheck(len(rows), tuple(problems))


def document_problem(
    archive: DocumentArchive,
    location: str,
    sha256: str,
    signed: bool,
    trust_roots: list[bytes] | None,
) -> str | None:
    """One archived document read back: its fingerprint, then its signature; None when sound.

    Raises `PostierError` or `OSError` when the document cannot be read from the GED.
    """
    from postier.documents import verify_pdf

    data = archive.read(location)
    if hashlib.sha256(data).hexdigest() != sha256:
        return "contenu altéré (empreinte SHA-256)"
    if signed:
        result = verify_pdf(data, trust_roots=trust_roots)
        if not result.valid:
            return "signature : " + ("; ".join(result.problems) or "signature invalide")
    return None
