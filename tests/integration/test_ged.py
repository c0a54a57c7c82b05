"""The GED: write-once archive, and `postier ged verify` finding missing or altered documents."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_invoice
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)

from postier import storage as storage_module
from postier.cli import main
from postier.delivery import archive as archive_module
from postier.delivery.archive import DocumentArchive
from postier.errors import DeliveryError
from postier.pipeline.archive_check import verify_archive
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run
from postier.storage import GED, StorageConfig
from postier.store.invoices import load_invoices

#: A real ed25519 public key, not the harness sshd's.
OTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
PASSWORD = "s3cret-de-la-ged"


def test_archive_is_write_once(tmp_path: Path) -> None:
    archive = DocumentArchive(str(tmp_path / "ged"))
    first = archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 original")
    again = archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 original")
    assert again == first  # same bytes: a no-op, retries are safe
    with pytest.raises(DeliveryError, match="autre contenu"):
        archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 forged")
    assert archive.read(first.location) == b"%PDF-1 original"
    with pytest.raises(DeliveryError, match="nom de fichier refusé"):
        archive.put("../evil.pdf", b"x")


def send_all(dsn: str, home: Path) -> Environment:
    env = Environment(dsn=dsn, home=home)
    summary = start_run(env, "factures_envoyer", {}, "jmartin", "test/send")
    for chunk in summary["chunks"]:
        process_chunk(env, summary["run_id"], chunk)
    return env


def test_ged_verify_reports_missing_and_altered_documents(
    postier_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"G-{n}", send_state="PRET")
    env = send_all(postier_env, tmp_path / "home")
    trust = [(tmp_path / "home" / "signing" / "demo-ca.der").read_bytes()]
    assert verify_archive(env, trust).ok and verify_archive(env, trust).checked == 3
    assert main(["ged", "verify"]) == 0

    files = sorted((tmp_path / "home" / "ged").rglob("*.pdf"))
    files[0].unlink()
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))
    check = verify_archive(env, trust)
    assert {p.invoice: p.problem.split(" (")[0] for p in check.problems} == {
        "G-0": "document manquant",
        "G-1": "contenu altéré",
    }
    capsys.readouterr()
    assert main(["ged", "verify"]) == 1
    assert "2 anomalie(s)" in capsys.readouterr().out


def sftp_ged(server: SshServer, folder: Path, home: Path, dsn: str, **changes: str) -> Environment:
    """An environment whose GED is `folder` of the sshd, configured as `POSTIER_GED_*`."""
    environ = server.storage_environment(folder, PASSWORD, prefix="POSTIER_GED") | changes
    access = StorageConfig.from_env(environ, place=GED)
    return Environment(dsn=dsn, home=home, ged_url=access.url, ged_access=access)


def test_a_ged_on_sftp_archives_sent_invoices_and_reads_them_back(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = sshd.folder()
    with psycopg.connect(postier_env) as conn:
        for n in range(2):
            insert_invoice(conn, number=f"GS-{n}", send_state="PRET")
    env = sftp_ged(sshd, folder, tmp_path / "home", postier_env)
    summary = start_run(env, "factures_envoyer", {}, "jmartin", "test/send-sftp-ged")
    for chunk in summary["chunks"]:
        process_chunk(env, summary["run_id"], chunk)

    # On the SFTP server's disk, not in the local GED folder.
    stored = sorted(folder.rglob("*.pdf"))
    assert [p.name for p in stored] == ["GS-0-facture.pdf", "GS-1-facture.pdf"]
    assert not (tmp_path / "home" / "ged").exists()
    with psycopg.connect(postier_env) as conn:
        locations = [
            row[0]
            for row in conn.execute("SELECT location FROM documents ORDER BY location").fetchall()
        ]
    # The recorded addresses name the server, never its login or password.
    assert all(PASSWORD not in loc and f"{sshd.user}@" not in loc for loc in locations)
    assert [env.archive().read(location) for location in locations] == [
        p.read_bytes() for p in stored
    ]
    trust = [(tmp_path / "home" / "signing" / "demo-ca.der").read_bytes()]
    check = verify_archive(env, trust)
    assert check.ok and check.checked == 2


# True: a send's put, which writes without looking first.
@pytest.mark.parametrize("replace_unindexed", [False, True])
def test_a_ged_server_with_another_host_key_is_refused_and_nothing_is_written(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
    replace_unindexed: bool,
) -> None:
    folder = sshd.folder()
    env = sftp_ged(
        sshd, folder, tmp_path / "home", postier_env, POSTIER_GED_HOST_KEY=OTHER_HOST_KEY
    )
    with pytest.raises(DeliveryError) as refused:
        env.archive().put(
            "2026/11/C1/FA-1-facture.pdf", b"%PDF-1 original", replace_unindexed=replace_unindexed
        )
    message = str(refused.value)
    assert "clé d'hôte du serveur de la GED" in message and "différente" in message
    assert "POSTIER_GED_HOST_KEY" in message and PASSWORD not in message
    assert not any(folder.rglob("*.pdf")) and not any(folder.rglob("*.part"))


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def unwritten_pages(path: Path) -> int:
    """Pages of `path` the kernel holds but has not yet written to the disk (dirty or under
    writeback), per cachestat(2) (Linux ≥ 6.5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    whole_file = (ctypes.c_uint64 * 2)(0, 0)
    stat = _CacheStat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(451, fd, ctypes.byref(whole_file), ctypes.byref(stat), 0) != 0:
            pytest.skip(f"cachestat(2) unavailable: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return int(stat.dirty + stat.writeback)


class _CommitWatch(psycopg.Connection):  # type: ignore[type-arg]
    """A real connection that, when asked to commit, first notes what the GED's files hold
    unwritten."""

    ged: Path
    seen: list[dict[str, int]]

    def commit(self) -> None:
        self.seen.append({p.name: unwritten_pages(p) for p in self.ged.rglob("*.pdf")})
        super().commit()


@dataclass(frozen=True)
class CommitWatchedEnvironment(Environment):
    seen: list[dict[str, int]] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[Any]:
        conn = _CommitWatch.connect(self.dsn)
        conn.ged, conn.seen = Path(self.archive_url), self.seen
        return conn


# 2: the write-back of the first documents begins in the background during the chunk.
@pytest.mark.parametrize("background_every", [2, archive_module.BACKGROUND_SYNC_EVERY])
# 2: the GED copies written a batch of 2 during the chunk, the third by the sync.
@pytest.mark.parametrize("write_batch", [2, storage_module.WRITE_BATCH])
def test_a_send_chunk_commits_only_once_its_ged_files_are_on_the_disk(
    postier_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    background_every: int,
    write_batch: int,
) -> None:
    """A power loss after the commit must not leave an invoice recorded as archived whose
    signed PDF was still only in memory: when the chunk commits, the kernel holds nothing of
    the GED's files unwritten (without a sync they stay dirty for ~30 s)."""
    monkeypatch.setattr(archive_module, "BACKGROUND_SYNC_EVERY", background_every)
    monkeypatch.setattr(storage_module, "WRITE_BATCH", write_batch)
    with psycopg.connect(postier_env) as conn:
        for n in range(3):
            insert_invoice(conn, number=f"GD-{n}", send_state="PRET")
    home = tmp_path / "home"
    summary = start_run(Environment(dsn=postier_env, home=home), "factures_envoyer", {}, "j", "d")
    assert summary["chunks"] == [0]
    env = CommitWatchedEnvironment(dsn=postier_env, home=home)
    process_chunk(env, summary["run_id"], 0)

    at_commit = env.seen[0]
    assert sorted(at_commit) == [f"GD-{n}-facture.pdf" for n in range(3)]
    assert at_commit == dict.fromkeys(at_commit, 0)
    with psycopg.connect(postier_env) as conn:
        archived = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert archived == (3,)


def test_a_ged_copy_failing_in_a_batch_fails_the_send_chunk_in_french_and_commits_nothing(
    postier_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "WRITE_BATCH", 2)
    with psycopg.connect(postier_env) as conn:
        ids = [insert_invoice(conn, number=f"GF-{n}", send_state="PRET") for n in range(3)]
        last = load_invoices(conn, ids[-1:])[0]
    env = Environment(dsn=postier_env, home=tmp_path / "home")
    summary = start_run(env, "factures_envoyer", {}, "jmartin", "test/ged-batch-failure")
    # The last invoice's copy, written by the sync before the commit, cannot be: a folder has
    # its name (the first two were written as a batch of 2).
    key = DocumentArchive.key_for(last.invoice_date, last.customer.code, last.number)
    ged = Path(env.archive_url)
    (ged / key).mkdir(parents=True)

    with pytest.raises(DeliveryError, match=r"^écriture impossible de .*/GF-2-facture\.pdf : "):
        process_chunk(env, summary["run_id"], summary["chunks"][0])

    with psycopg.connect(postier_env) as conn:
        states = [r[0] for r in conn.execute("SELECT send_state FROM invoices ORDER BY number")]
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert states == ["PRET"] * 3 and documents == (0,)
    written = sorted(p.name for p in ged.rglob("GF-*"))
    assert written == ["GF-0-facture.pdf", "GF-1-facture.pdf", "GF-2-facture.pdf"]  # no `.part`
    assert (ged / key).is_dir()
