"""The runs' storage on a local folder: what a task refuses, what a crash leaves behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

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

    def interrupted(source: str, target: str) -> None:
        raise KeyboardInterrupt  # e.g. the task's timeout, raised in the middle of the write

    monkeypatch.setattr(storage_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.write("traites.pdf", b"%PDF-")
    assert not list(run_dir.rglob("*.part"))


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
