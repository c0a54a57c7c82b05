"""Runs' files in a storage every worker reaches (`POSTIER_STORAGE_URL`), here the real local
sshd: written by one « host », finalised and served by another, read back over SFTP."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import psycopg
import pytest
import treatment_runs
from builders import insert_invoice
from fastapi import Header
from fastapi.testclient import TestClient
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)
from pypdf import PdfReader

from postier.airflow.reports_app import Clerk, create_app
from postier.delivery.chorus_sftp import ChorusSftp
from postier.errors import DeliveryError
from postier.pipeline.context import Environment
from postier.pipeline.reports import finalize, write_report
from postier.pipeline.runs import process_chunk, start_run
from postier.storage import StorageConfig, open_storage

PASSWORD = "s3cret-du-stockage"


def storage_config(server: SshServer, folder: Path, **changes: str) -> StorageConfig:
    return StorageConfig.from_env(server.storage_environment(folder, PASSWORD) | changes)


def sftp_read(server: SshServer, path: str) -> bytes:
    """A file of the SFTP server, read with a client of its own (not the storage's)."""
    with ChorusSftp(server.config(server.base)) as client, client.sftp.open(path, "rb") as f:
        return f.read()


def pdf_text(data: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


@pytest.fixture
def shared(sshd: SshServer, tmp_path: Path) -> Path:  # noqa: F811
    """An empty folder of the sshd, the storage of the test's runs."""
    folder = sshd.base / "storage" / tmp_path.name
    folder.mkdir(parents=True)
    return folder


def test_finalising_on_another_home_makes_the_print_file_and_report_over_sftp(
    db_dsn: str,
    conn: psycopg.Connection,
    sshd: SshServer,  # noqa: F811
    shared: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for n in range(3):
        insert_invoice(conn, number=f"S-{n}")
    conn.commit()
    config = storage_config(sshd, shared)
    # Two « hosts »: own local homes, one storage URL.
    first = Environment(dsn=db_dsn, home=tmp_path / "a", storage_config=config, workers=2)
    second = Environment(dsn=db_dsn, home=tmp_path / "b", storage_config=config, workers=2)
    caplog.set_level(logging.DEBUG)

    started = start_run(first, "factures_imprimer", {}, "jmartin", "factures_imprimer/stor-1")
    for chunk in started["chunks"]:
        process_chunk(first, "factures_imprimer/stor-1", chunk)
    summary = write_report(
        second, "factures_imprimer/stor-1", finalize(second, "factures_imprimer/stor-1")
    )

    run_dir = f"{shared}/runs/{started['run_id']:06d}-factures_imprimer"
    merged = pdf_text(sftp_read(sshd, f"{run_dir}/impression.pdf"))
    assert all(f"S-{n}" in merged for n in range(3))
    assert "S-1" in pdf_text(sftp_read(sshd, f"{run_dir}/factures/S-1.pdf"))
    report = json.loads(sftp_read(sshd, f"{run_dir}/rapport.json"))
    assert report["compteurs"]["traitees"] == 3
    assert "Traitées" in sftp_read(sshd, f"{run_dir}/rapport.md").decode()
    # Nothing on either host's own disk; the locations name the server, never the password.
    assert not (tmp_path / "a" / "runs").exists() and not (tmp_path / "b" / "runs").exists()
    location = f"sftp://{sshd.host}:{sshd.port}{run_dir}"
    assert summary["rapport"] == f"{location}/rapport.md"
    assert f"{location}/impression.pdf" in report["fichiers"]
    recorded = conn.execute(
        "SELECT output_dir, report::text FROM runs WHERE id = %s", (started["run_id"],)
    ).fetchone()
    assert recorded is not None and recorded[0] == location
    assert PASSWORD not in recorded[1] and PASSWORD not in caplog.text
    assert sshd.user + "@" not in recorded[1]


def test_ui_lists_and_serves_a_run_of_the_sftp_storage_and_nothing_else(
    db_dsn: str,
    conn: psycopg.Connection,
    sshd: SshServer,  # noqa: F811
    shared: Path,
    tmp_path: Path,
) -> None:
    insert_invoice(conn, number="U-1")
    conn.commit()
    config = storage_config(sshd, shared)
    worker = Environment(dsn=db_dsn, home=tmp_path / "worker", storage_config=config)
    report = treatment_runs.run_treatment(worker, "factures_imprimer", {}, "jmartin")
    run_id = report["execution"]
    run_dir = shared / "runs" / f"{run_id:06d}-factures_imprimer"
    (shared / "secret.txt").write_text("ne doit pas sortir")
    (run_dir / "lien.txt").symlink_to(shared / "secret.txt")
    (run_dir / "moitie.pdf.part").write_bytes(b"%PDF-")

    ui = Environment(dsn=db_dsn, home=tmp_path / "api-server", storage_config=config)

    def signed_in(x_login: str = Header("jmartin")) -> Clerk:
        return Clerk(x_login, False)

    app = create_app(signed_in, lambda *_: "", lambda: ui, b"test-key")
    with TestClient(app, follow_redirects=False) as client:
        page = client.get(f"/executions/{run_id}")
        assert page.status_code == 200
        assert f"/executions/{run_id}/fichiers/factures/U-1.pdf'" in page.text
        assert "lien.txt" not in page.text and "moitie.pdf" not in page.text
        assert "Sélectionnées" in page.text  # the report, read from the storage
        merged = client.get(f"/executions/{run_id}/fichiers/impression.pdf")
        assert merged.status_code == 200 and merged.headers["content-type"] == "application/pdf"
        assert "U-1" in pdf_text(merged.content)
        for name in ("..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "lien.txt", "moitie.pdf.part"):
            response = client.get(f"/executions/{run_id}/fichiers/{name}")
            assert response.status_code == 404, name
            assert "ne doit pas sortir" not in response.text


def test_a_storage_server_with_another_host_key_is_refused(
    sshd: SshServer,  # noqa: F811
    shared: Path,
    tmp_path: Path,
) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    config = storage_config(sshd, shared, POSTIER_STORAGE_HOST_KEY=other)
    with pytest.raises(DeliveryError) as refused:
        open_storage(config, tmp_path).run_folder(1, "factures_imprimer").write("a.pdf", b"x")
    assert PASSWORD not in str(refused.value)
    assert not any(shared.iterdir())
