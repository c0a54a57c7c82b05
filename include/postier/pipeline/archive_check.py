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
    from postier.documents import verify_pdf

    archive = DocumentArchive(env.archive_url)
    problems: list[ArchiveProblem] = []
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT i.number, d.location, d.sha256, d.signed FROM documents d "
            "JOIN invoices i ON i.id = d.invoice_id ORDER BY d.id"
        ).fetchall()
    for number, location, sha256, signed in rows:
        try:
            data = archive.read(location)
        except (PostierError, OSError) as error:
            problems.append(ArchiveProblem(number, location, f"document manquant ({error})"))
            continue
        if hashlib.sha256(data).hexdigest() != sha256:
            problems.append(ArchiveProblem(number, location, "contenu altéré (empreinte SHA-256)"))
            continue
        if signed:
            result = verify_pdf(data, trust_roots=trust_roots)
            if not result.valid:
                why = "; ".join(result.problems) or "signature invalide"
                problems.append(ArchiveProblem(number, location, f"signature : {why}"))
    return ArchiveCheck(len(rows), tuple(problems))
