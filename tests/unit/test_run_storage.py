"""The runs' storage on a local folder: what a task refuses, what a crash leaves behind."""

from __future__ import annotations

import errno
import json
import os
import posixpath
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postier import storage as storage_module
from postier.delivery import archive as archive_module
from postier.delivery.archive import DocumentArchive
from postier.errors import ConfigurationError, DeliveryError
from postier.service_url import parse_service_url
from postier.storage import GED, StorageConfig, open_place, open_storage


def test_a_file_of_another_storage_is_refused_in_french(tmp_path: Path) -> None:
    mine = open_storage(StorageConfig(), tmp_path / "a")
    theirs = open_storage(StorageConfig(url=f"file://{tmp_path / 'b'}"), tmp_path / "a")
    written = theirs.run_folder(7, "factures_imprimer").write("impression.pdf", b"%PDF-1.7")
    assert written == f"{tmp_path}/b/runs/000007-factures_imprimer/impression.pdf"
    with pytest.raises(DeliveryError, match="POSTIER_STORAGE_URL doit être le même"):
        mine.read(written)
    for escape in ("../../b/runs/000007-factures_imprimer/impression.pdf", "/etc/passwd"):
        with pytest.raises(DeliveryError):
            mine.read(f"{tmp_path}/a/{escape}")


def test_a_file_being_written_is_never_seen_and_a_failed_one_leaves_nothing(
    tmp_path: Path,
) -> None:
    folder = open_storage(StorageConfig(), tmp_path).run_folder(3, "factures_imprimer")
    with folder.writer("impression.pdf") as handle:
        handle.write(b"%PDF-")
        assert folder.files() == {} and folder.file("impression.pdf.part") is None
    assert folder.files() == {"impression.pdf": 5}
    with pytest.raises(RuntimeError), folder.writer("traites.pdf") as handle:
        handle.write(b"%PDF-")
        raise RuntimeError("rendu interrompu")
    assert folder.files() == {"impression.pdf": 5}
    assert sorted(p.name for p in (tmp_path / "runs" / "000003-factures_imprimer").iterdir()) == [
        "impression.pdf"
    ]


def test_a_storage_configuration_that_cannot_work_is_refused_in_french(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="chemin absolu attendu"):
        open_storage(StorageConfig(url="partage/postier"), tmp_path)
    with pytest.raises(ConfigurationError, match="protocole « nosuchfs » non géré"):
        open_storage(StorageConfig(url="nosuchfs://hote/postier"), tmp_path)
    with pytest.raises(ConfigurationError, match="objet JSON attendu"):
        open_place(StorageConfig(url=f"file://{tmp_path}", options="[1]"))


def test_the_storage_connection_gives_its_url_and_options() -> None:
    extra = {"storage_options": {"endpoint_url": "http://minio:9000"}, "host_key": "ssh-ed25519 A"}
    config = StorageConfig.from_connection("s3://factures/postier", None, None, None, extra)
    assert (config.url, config.host_key) == ("s3://factures/postier", "ssh-ed25519 A")
    assert json.loads(config.options) == {"endpoint_url": "http://minio:9000"}
    by_extra = StorageConfig.from_connection("ignored", None, None, None, {"url": " /srv/p "})
    assert (by_extra.url, by_extra.options) == ("/srv/p", "")


def test_a_ged_url_is_refused_in_french_and_its_documents_located_without_its_secrets() -> None:
    with pytest.raises(ConfigurationError, match=r"^POSTIER_GED_URL \(nosuchfs://hote\) : protoc"):
        DocumentArchive("nosuchfs://cle:s3cret@hote/ged", StorageConfig(place=GED))
    archive = DocumentArchive(
        "memory://AKIACLE:s3cret@factures/ged-secrets", StorageConfig(place=GED)
    )
    archived = archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1.7")
    assert archived.location == "memory://factures/ged-secrets/2026/11/C1/FA-1-facture.pdf"
    assert archive.read(archived.location) == b"%PDF-1.7"


def test_the_storage_connection_logs_in_with_its_login_and_password() -> None:
    extra = {"url": "sftp://fichiers.example:2222/srv/postier", "host_key": "ssh-ed25519 A"}
    config = StorageConfig.from_connection(None, None, "postier", "p@ss#1/é", extra, place=GED)
    parts = parse_service_url(config.url, name="x", schemes=("sftp",), expected="sftp")
    assert (parts.username, parts.password, parts.host, parts.port, parts.path) == (
        "postier",
        "p@ss#1/é",
        "fichiers.example",
        2222,
        "/srv/postier",
    )
    assert "p@ss" not in repr(config)
    with pytest.raises(ConfigurationError, match="connexion postier_storage : login et mot de"):
        StorageConfig.from_connection("s3://factures/postier", None, "AKIACLE", "s3cret", {})
    with pytest.raises(ConfigurationError, match="gardez-en un seul") as twice:
        StorageConfig.from_connection("sftp://moi:pw@hote/srv", None, "postier", None, {})
    assert "pw" not in str(twice.value)


def test_a_local_write_that_fails_is_a_french_error_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = open_storage(StorageConfig(), tmp_path).run_folder(4, "factures_imprimer")
    run_dir = tmp_path / "runs" / "000004-factures_imprimer"
    (run_dir / "impression.pdf" / "occupé").mkdir(parents=True)  # a folder has the file's name
    with pytest.raises(DeliveryError, match=r"^écriture impossible de .*/impression\.pdf : "):
        folder.write("impression.pdf", b"%PDF-")
    assert not list(run_dir.rglob("*.part"))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # e.g. the task's timeout, raised in the middle of the write

    # Interrupted before its name is given: neither a new file nor one written over changes.
    (run_dir / "traites.pdf").write_bytes(b"%PDF-ancien")
    with monkeypatch.context() as patched:
        patched.setattr(storage_module.os, "link", interrupted)
        with pytest.raises(KeyboardInterrupt):
            folder.write("bordereau.pdf", b"%PDF-")
        with pytest.raises(KeyboardInterrupt):
            folder.write("traites.pdf", b"%PDF-nouveau")
    assert sorted(p.name for p in run_dir.iterdir()) == ["impression.pdf", "traites.pdf"]
    # Writing over a file, interrupted before the rename: the old file stays, no `.part`.
    monkeypatch.setattr(storage_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.write("traites.pdf", b"%PDF-nouveau")
    assert sorted(p.name for p in run_dir.iterdir()) == ["impression.pdf", "traites.pdf"]
    assert (run_dir / "traites.pdf").read_bytes() == b"%PDF-ancien"


KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from postier.storage import StorageConfig, open_storage

folder = open_storage(StorageConfig(), Path(sys.argv[1])).run_folder(5, "factures_preparer_envoi")
folder.write("preparees/F-1.pdf", b"%PDF-1")
write = os.write

def killed_after_a_first_part(fd, data):
    write(fd, bytes(data[:10]))
    os.kill(os.getpid(), signal.SIGKILL)  # the worker host's OOM killer, a kill -9…

os.write = killed_after_a_first_part
folder.write("preparees/F-2.pdf", b"%PDF-2" * 1000)
"""


def test_a_task_killed_in_the_middle_of_a_write_leaves_no_file_behind(tmp_path: Path) -> None:
    """Killed (SIGKILL: nothing of Python's clean-up runs) while writing a file: neither a
    truncated file under its name nor a `.part` is left in the run's folder."""
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], check=False)
    assert killed.returncode == -signal.SIGKILL
    written = tmp_path / "runs" / "000005-factures_preparer_envoi" / "preparees"
    assert [p.name for p in written.iterdir()] == ["F-1.pdf"]
    assert (written / "F-1.pdf").read_bytes() == b"%PDF-1"


def test_a_retry_writes_over_the_files_of_the_attempt_it_replaces(tmp_path: Path) -> None:
    folder = open_storage(StorageConfig(), tmp_path).run_folder(6, "factures_preparer_envoi")
    first = folder.write("preparees/F-1.pdf", b"%PDF-premier essai")
    assert folder.write("preparees/F-1.pdf", b"%PDF-relance") == first
    assert folder.read("preparees/F-1.pdf") == b"%PDF-relance"
    assert folder.files() == {"preparees/F-1.pdf": 12}
    ged = DocumentArchive(str(tmp_path / "ged"), StorageConfig(place=GED))
    ged.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-envoi annule")
    archived = ged.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-renvoi", replace_unindexed=True)
    ged.sync()
    assert ged.read(archived.location) == b"%PDF-renvoi"
    assert [p.name for p in (tmp_path / "ged" / "2026" / "11" / "C1").iterdir()] == [
        "FA-1-facture.pdf"
    ]


@pytest.mark.parametrize(
    ("step", "refusal"),
    [
        ("open", errno.EOPNOTSUPP),  # a filesystem without unnamed files (NFS, FUSE…)
        ("open", errno.EISDIR),  # a kernel older than 3.11
        ("link", errno.EPERM),  # a filesystem without hard links
        ("link", errno.EXDEV),
        ("link", None),  # no /proc to name the file through: the kernel's own ENOENT
    ],
)
def test_where_files_cannot_be_written_unnamed_they_are_written_as_part_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, refusal: int | None
) -> None:
    real = {"open": os.open, "link": os.link}
    refused: list[str] = []

    def refusing(*args: Any, **kwargs: Any) -> Any:
        unnamed = step == "link" or args[1] & os.O_TMPFILE == os.O_TMPFILE
        if unnamed:
            refused.append(str(args[0]))
            if refusal is not None:
                raise OSError(refusal, os.strerror(refusal))
        return real[step](*args, **kwargs)

    monkeypatch.setattr(storage_module.os, step, refusing)
    if refusal is None:
        monkeypatch.setattr(storage_module, "_PROC_FD", str(tmp_path / "sans-proc"))
    folder = open_storage(StorageConfig(), tmp_path).run_folder(7, "factures_preparer_envoi")
    for n in range(3):
        folder.write(f"preparees/F-{n}.pdf", b"%PDF-1")
    folder.write("preparees/F-0.pdf", b"%PDF-relance")
    assert folder.files() == {
        "preparees/F-0.pdf": 12,
        "preparees/F-1.pdf": 6,
        "preparees/F-2.pdf": 6,
    }
    assert len(refused) == 1  # tried once: the storage then writes `.part` files

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.write("preparees/F-3.pdf", b"%PDF-3")
    written = tmp_path / "runs" / "000007-factures_preparer_envoi" / "preparees"
    assert sorted(p.name for p in written.iterdir()) == ["F-0.pdf", "F-1.pdf", "F-2.pdf"]


@pytest.mark.parametrize(
    ("name", "refusal", "reason"),
    [
        ("F-1.pdf", errno.ENOSPC, "espace disque insuffisant"),  # the disk full at the link
        ("F-1.pdf", errno.EIO, "Input/output error"),
        ("F-" + "1" * 300 + ".pdf", None, "File name too long"),  # the kernel's own refusal
    ],
)
def test_a_link_that_fails_for_this_file_fails_its_write_and_the_next_files_are_unnamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, refusal: int | None, reason: str
) -> None:
    """Only a filesystem that cannot link unnamed files turns them off: a full disk at the
    link fails that write, in French, as a `.part`'s would, and nothing is left."""
    link = os.link
    links: list[str] = []

    def linking(source: str, target: str, **kwargs: Any) -> None:
        links.append(posixpath.basename(target))
        if refusal is not None and len(links) == 1:
            raise OSError(refusal, os.strerror(refusal))
        link(source, target, **kwargs)

    monkeypatch.setattr(storage_module.os, "link", linking)
    folder = open_storage(StorageConfig(), tmp_path).run_folder(8, "factures_preparer_envoi")
    with pytest.raises(DeliveryError, match=rf"^écriture impossible de .*/F-1+\.pdf : .*{reason}"):
        folder.write(f"preparees/{name}", b"%PDF-1")
    written = tmp_path / "runs" / "000008-factures_preparer_envoi" / "preparees"
    assert list(written.iterdir()) == []
    folder.write("preparees/F-2.pdf", b"%PDF-2")
    assert links == [name, "F-2.pdf"]  # the next file still written unnamed, then linked
    assert folder.files() == {"preparees/F-2.pdf": 6}


def test_a_retry_over_a_part_left_by_an_older_version_writes_its_file(tmp_path: Path) -> None:
    """A `.part` beside the file (an older version's write, interrupted) is no obstacle to a
    retry writing over the file: it is replaced, and nothing but the file remains."""
    folder = open_storage(StorageConfig(), tmp_path).run_folder(9, "factures_preparer_envoi")
    folder.write("preparees/F-1.pdf", b"%PDF-premier essai")
    written = tmp_path / "runs" / "000009-factures_preparer_envoi" / "preparees"
    (written / "F-1.pdf.part").write_bytes(b"%PDF-pre")
    folder.write("preparees/F-1.pdf", b"%PDF-relance")
    assert [p.name for p in written.iterdir()] == ["F-1.pdf"]
    assert folder.read("preparees/F-1.pdf") == b"%PDF-relance"


def test_a_file_that_cannot_be_read_is_a_french_error(tmp_path: Path) -> None:
    storage = open_storage(StorageConfig(), tmp_path)
    folder = storage.run_folder(5, "factures_imprimer")
    written = folder.write("impression.pdf", b"%PDF-")
    missing = written.replace("impression.pdf", "traites.pdf")
    with pytest.raises(DeliveryError) as failed:
        storage.read(missing)
    assert str(failed.value) == f"lecture impossible de {missing} : fichier introuvable"
    (tmp_path / "runs" / "000005-factures_imprimer" / "export.zip").mkdir()
    a_folder = written.replace("impression.pdf", "export.zip")
    with pytest.raises(DeliveryError) as failed:
        storage.read(a_folder)
    assert str(failed.value) == (
        f"lecture impossible de {a_folder} : un dossier porte le nom du fichier"
    )


@pytest.mark.parametrize("background_every", [1, 64])
def test_ged_files_that_cannot_be_made_durable_stop_the_chunk_in_french(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background_every: int
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module, "BACKGROUND_SYNC_EVERY", background_every)
    archive = DocumentArchive(str(tmp_path / "ged"), StorageConfig(place=GED))
    archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1")
    monkeypatch.setattr(storage_module, "_syncfs", disk_full)
    archive.put("2026/11/C1/FA-2-facture.pdf", b"%PDF-2")  # a background sync meets it first
    with pytest.raises(DeliveryError) as failed:
        archive.sync()
    assert str(failed.value) == (
        f"mise en sûreté impossible des fichiers de {tmp_path}/ged : espace disque insuffisant "
        "; rien n'est validé, la tâche peut être relancée"
    )
    monkeypatch.undo()
    archive.put("2026/11/C1/FA-3-facture.pdf", b"%PDF-3")  # the next chunk syncs its own
    archive.sync()
