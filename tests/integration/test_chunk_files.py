"""A chunk's files, written a few at a time (`WriteBatch`): every one complete under its name
before the rows naming it commit, and a failed one failing the chunk in French."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_invoice

from postier import storage as storage_module
from postier.errors import DeliveryError
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run


class _CommitWatch(psycopg.Connection):  # type: ignore[type-arg]
    """A real connection that, when asked to commit, first notes the run folders' files."""

    runs: Path
    seen: list[dict[str, bytes]]

    def commit(self) -> None:
        self.seen.append(
            {str(p.relative_to(self.runs)): p.read_bytes() for p in self.runs.rglob("*.pdf*")}
        )
        super().commit()


@dataclass(frozen=True)
class CommitWatchedEnvironment(Environment):
    seen: list[dict[str, bytes]] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[Any]:
        conn = _CommitWatch.connect(self.dsn)
        conn.runs, conn.seen = self.home / "runs", self.seen
        return conn


def states(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT send_state FROM invoices ORDER BY number")]


# 2: two full batches then one file left for the flush before the commit.
@pytest.mark.parametrize("batch", [2, storage_module.WRITE_BATCH])
def test_a_prepare_chunk_commits_only_once_every_prepared_pdf_is_complete(
    postier_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(storage_module, "WRITE_BATCH", batch)
    with psycopg.connect(postier_env) as conn:
        for n in range(5):
            insert_invoice(conn, number=f"WB-{n}")
    home = tmp_path / "home"
    summary = start_run(
        Environment(dsn=postier_env, home=home), "factures_preparer_envoi", {}, "j", "b"
    )
    env = CommitWatchedEnvironment(dsn=postier_env, home=home)
    process_chunk(env, summary["run_id"], 0)

    folder = f"{summary['run_id']:06d}-factures_preparer_envoi/preparees"
    # The chunk's commit (the last one is the connection's, on leaving `process_chunk`).
    at_commit = env.seen[0]
    assert sorted(at_commit) == [f"{folder}/WB-{n}.pdf" for n in range(5)]  # no `.part`
    assert all(
        data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF") for data in at_commit.values()
    )
    assert states(postier_env) == ["PRET"] * 5
    with psycopg.connect(postier_env) as conn:
        outputs = [r[0] for r in conn.execute("SELECT output FROM run_items ORDER BY position")]
    assert outputs == [f"{home}/runs/{folder}/WB-{n}.pdf" for n in range(5)]


def test_a_prepared_pdf_failing_in_a_batch_fails_the_chunk_in_french_and_commits_nothing(
    postier_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "WRITE_BATCH", 2)
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"WF-{n}")
    env = Environment(dsn=postier_env, home=tmp_path / "home")
    summary = start_run(env, "factures_preparer_envoi", {}, "jmartin", "test/batch-failure")
    prepared = env.home / "runs" / f"{summary['run_id']:06d}-factures_preparer_envoi" / "preparees"
    # The last invoice's file, written by the flush before the commit, cannot be: a folder has
    # its name.
    (prepared / "WF-2.pdf").mkdir(parents=True)

    with pytest.raises(DeliveryError, match=r"^écriture impossible de /.*/preparees/WF-2\.pdf : "):
        process_chunk(env, summary["run_id"], summary["chunks"][0])

    assert states(postier_env) == ["EN_ATTENTE"] * 3
    assert sorted(p.name for p in prepared.iterdir()) == ["WF-0.pdf", "WF-1.pdf", "WF-2.pdf"]
    assert (prepared / "WF-2.pdf").is_dir()
