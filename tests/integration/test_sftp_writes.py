"""Writing runs' files and the GED on the real local sshd: few round trips per file, and a write
failing mid-chunk surfaces in French with nothing half-written, committed or lost."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import zipfile
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)
from treatment_runs import run_treatment

from postier.delivery.archive import DocumentArchive
from postier.errors import DeliveryError
from postier.pipeline.context import Environment
from postier.pipeline.reports import finalize
from postier.pipeline.runs import process_chunk, start_run
from postier.storage import GED, StorageConfig, open_storage

PASSWORD = "s3cret-des-ecritures"
EXPORT_RUN = "factures_exporter_impression"
#: The size of a signed invoice.
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 280 + b"\n%%EOF\n"


def places(server: SshServer) -> tuple[StorageConfig, StorageConfig]:
    """A run storage and a GED on two fresh folders of the sshd."""
    storage = server.storage_environment(server.folder(), PASSWORD)
    ged = server.storage_environment(server.folder(), PASSWORD, prefix="POSTIER_GED")
    return StorageConfig.from_env(storage), StorageConfig.from_env(ged, place=GED)


def sftp_requests(caplog: pytest.LogCaptureFixture, *, full: bool = False) -> list[str]:
    """The SFTP requests paramiko logged (`open`, `stat`, `mkdir`, `posix_rename`…), with
    their arguments when `full`."""
    return [
        r.getMessage().split("] ", 1)[1].split("(", 1)[0]
        if not full
        else r.getMessage().split("] ", 1)[1]
        for r in caplog.records
        if r.name == "paramiko.transport.sftp"
        and "(" in r.getMessage()
        and "->" not in r.getMessage()
    ]


def test_a_run_file_and_its_ged_copy_are_written_without_looking_first(
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage, ged = places(sshd)
    folder = open_storage(storage, tmp_path / "home").run_folder(1, "factures_envoyer")
    archive = DocumentArchive(ged.url, ged)
    folder.write("preparees/FA-0.pdf", PDF)
    archive.put("2026/11/C1/FA-0-facture.pdf", PDF, replace_unindexed=True)

    caplog.set_level(logging.DEBUG, logger="paramiko.transport.sftp")
    caplog.clear()  # the sessions were opened above
    for n in range(1, 4):
        folder.write(f"preparees/FA-{n}.pdf", PDF)
        archive.put(f"2026/11/C1/FA-{n}-facture.pdf", PDF, replace_unindexed=True)

    # Per file: open the `.part`, close it (its pipelined writes confirmed), rename it.
    assert sftp_requests(caplog) == ["open", "close", "posix_rename"] * 6
    written = Path(ged.url.split(str(sshd.port), 1)[1]) / "2026/11/C1/FA-3-facture.pdf"
    assert written.read_bytes() == PDF
    assert not any(written.parent.glob("*.part"))


def test_sftp_storage_and_ged_sockets_send_small_writes_at_once(
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage, ged = places(sshd)
    folder = open_storage(storage, tmp_path / "home").run_folder(2, "factures_envoyer")
    archive = DocumentArchive(ged.url, ged)
    folder.write("preparees/FA-0.pdf", PDF)
    archive.put("2026/11/C1/FA-0-facture.pdf", PDF, replace_unindexed=True)

    # With Nagle's algorithm each file's last write waited for the server's delayed ACK
    # (≈ 40 ms a file on Linux); `make bench` (bench/storage_bench.py) measures the cost.
    for fs in (folder.storage.fs, archive.fs):
        sock = fs.client.get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def sftp_environment(server: SshServer, dsn: str, home: Path) -> tuple[Environment, Path, Path]:
    """An environment whose run storage and GED are on the sshd; their folders."""
    storage, ged = places(server)
    env = Environment(
        dsn=dsn, home=home, storage_config=storage, ged_url=ged.url, ged_access=ged, workers=1
    )
    return (
        env,
        Path(storage.url.split(str(server.port), 1)[1]),
        Path(ged.url.split(str(server.port), 1)[1]),
    )


def test_a_ged_write_failing_mid_chunk_commits_nothing_and_the_retry_finishes_the_send(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    with psycopg.connect(postier_env) as conn:
        for code in ("W-A", "W-B", "W-C"):
            insert_invoice(conn, insert_customer(conn, code=code), send_state="PRET")
    env, _, ged = sftp_environment(sshd, postier_env, tmp_path / "home")
    # The second invoice's GED folder cannot be made: a file has its name.
    blocker = ged / "2026" / "11" / "W-B"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")

    summary = start_run(env, "factures_envoyer", {}, "jmartin", "test/ged-mid-chunk")
    assert len(summary["chunks"]) == 1
    with pytest.raises(DeliveryError) as failed:
        process_chunk(env, summary["run_id"], summary["chunks"][0])

    message = str(failed.value)
    assert message.startswith("écriture impossible de sftp://127.0.0.1:")
    assert "/2026/11/W-B/" in message and "un fichier porte le nom d'un dossier" in message
    assert PASSWORD not in message and f"{sshd.user}@" not in message
    with psycopg.connect(postier_env) as conn:
        states = [r[0] for r in conn.execute("SELECT send_state FROM invoices").fetchall()]
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert states == ["PRET"] * 3 and documents == (0,)
    # What was written before the failure is whole (never indexed); nothing half-written.
    assert not any(ged.rglob("*.part"))
    assert all(p.read_bytes().rstrip().endswith(b"%%EOF") for p in ged.rglob("*.pdf"))

    blocker.unlink()
    process_chunk(env, summary["run_id"], summary["chunks"][0])
    with psycopg.connect(postier_env) as conn:
        states = [r[0] for r in conn.execute("SELECT send_state FROM invoices").fetchall()]
        indexed = conn.execute("SELECT location, sha256 FROM documents").fetchall()
    assert states == ["ENVOYE"] * 3 and len(indexed) == 3
    for location, sha256 in indexed:
        assert hashlib.sha256(env.archive().read(location)).hexdigest() == sha256


def test_a_run_file_failing_mid_chunk_leaves_the_invoices_to_prepare_again(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    with psycopg.connect(postier_env) as conn:
        numbers = [f"WP-{n}" for n in range(3)]
        for number in numbers:
            insert_invoice(conn, number=number)
    env, storage, _ = sftp_environment(sshd, postier_env, tmp_path / "home")
    summary = start_run(env, "factures_preparer_envoi", {}, "jmartin", "test/run-mid-chunk")
    # The second invoice's file cannot be written: a folder has the name of its `.part`.
    prepared = storage / "runs" / f"{summary['run_id']:06d}-factures_preparer_envoi" / "preparees"
    (prepared / "WP-1.pdf.part").mkdir(parents=True)

    with pytest.raises(DeliveryError, match="^écriture impossible de sftp://.*/WP-1.pdf : "):
        process_chunk(env, summary["run_id"], summary["chunks"][0])

    with psycopg.connect(postier_env) as conn:
        states = [r[0] for r in conn.execute("SELECT send_state FROM invoices").fetchall()]
    assert states == ["EN_ATTENTE"] * 3
    assert all(p.read_bytes().rstrip().endswith(b"%%EOF") for p in prepared.glob("*.pdf"))

    (prepared / "WP-1.pdf.part").rmdir()
    process_chunk(env, summary["run_id"], summary["chunks"][0])
    with psycopg.connect(postier_env) as conn:
        states = [r[0] for r in conn.execute("SELECT send_state FROM invoices").fetchall()]
    assert states == ["PRET"] * 3
    assert sorted(p.name for p in prepared.iterdir()) == [f"{n}.pdf" for n in numbers]


def print_house_drop(server: SshServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder of the sshd as the export's drop (`POSTIER_EXPORT_URL`…)."""
    drop = server.folder() / "routeur"
    for name, value in server.storage_environment(drop, PASSWORD, prefix="POSTIER_EXPORT").items():
        monkeypatch.setenv(name, value)
    return drop


def test_the_print_house_drop_gets_the_zip_whole_and_the_report_names_it_without_secrets(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop = print_house_drop(sshd, monkeypatch)
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EXP-DROP")

    report = run_treatment(Environment(dsn=postier_env, home=tmp_path / "home"), EXPORT_RUN)

    (exported,) = drop.glob("export-*.zip")
    with zipfile.ZipFile(exported) as z:
        assert sorted(z.namelist()) == ["EXP-DROP.pdf", "index.csv"]
    assert [p.name for p in drop.iterdir()] == [exported.name]  # no `.part` left
    text = json.dumps(report)
    assert f"sftp://127.0.0.1:{sshd.port}{drop}/{exported.name}" in text
    assert PASSWORD not in text and f"{sshd.user}@" not in text


def test_the_chorus_zip_reads_each_pdf_of_an_sftp_storage_without_looking_for_it_first(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with psycopg.connect(postier_env) as conn:
        customer = insert_customer(conn, channel="chorus", siret="73282932000074")
        for n in range(3):
            insert_invoice(conn, customer, number=f"CZ-{n}", send_state="ENVOYE")
    storage, _ = places(sshd)
    env = Environment(
        dsn=postier_env,
        home=tmp_path / "home",
        chorus_sftp=sshd.config(sshd.folder()),
        storage_config=storage,
    )
    external = "factures_chorus_recuperer/test-zip"
    started = start_run(env, "factures_chorus_recuperer", {}, "jmartin", external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)

    caplog.set_level(logging.DEBUG, logger="paramiko.transport.sftp")
    caplog.clear()
    files = finalize(env, external)

    with zipfile.ZipFile(io.BytesIO(env.storage.read(files[0]))) as z:
        assert sorted(z.namelist()) == ["CZ-0.pdf", "CZ-1.pdf", "CZ-2.pdf"]
    looked = [m for m in sftp_requests(caplog, full=True) if m.startswith("stat(")]
    assert not [m for m in looked if ".pdf" in m], looked


def test_a_streamed_file_failing_after_its_part_is_opened_is_a_french_error_and_no_part(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EXP-PART")
    env, storage, _ = sftp_environment(sshd, postier_env, tmp_path / "home")
    external = f"{EXPORT_RUN}/test-part"
    started = start_run(env, EXPORT_RUN, {}, "jmartin", external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)
    # The ZIP's `.part` opens and fills; its rename fails: a folder has the ZIP's name.
    run_dir = storage / "runs" / f"{started['run_id']:06d}-{EXPORT_RUN}"
    (run_dir / f"export-{started['run_id']:06d}.zip" / "occupé").mkdir(parents=True)

    with pytest.raises(DeliveryError) as failed:
        finalize(env, external)

    message = str(failed.value)
    assert message.startswith(f"écriture impossible de sftp://127.0.0.1:{sshd.port}{run_dir}/")
    assert message.endswith("rien n'est validé, la tâche peut être relancée")
    assert PASSWORD not in message and f"{sshd.user}@" not in message
    assert not list(run_dir.rglob("*.part"))


def test_the_print_house_zip_of_an_sftp_storage_is_written_once_not_read_back(
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop = print_house_drop(sshd, monkeypatch)
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EXP-ONCE")
    env, storage, _ = sftp_environment(sshd, postier_env, tmp_path / "home")
    caplog.set_level(logging.DEBUG, logger="paramiko.transport.sftp")

    run_treatment(env, EXPORT_RUN)

    (exported,) = drop.glob("export-*.zip")
    (kept,) = storage.rglob("export-*.zip")
    assert exported.read_bytes() == kept.read_bytes()
    with zipfile.ZipFile(exported) as z:
        assert sorted(z.namelist()) == ["EXP-ONCE.pdf", "index.csv"]
    opened = [m for m in sftp_requests(caplog, full=True) if m.startswith("open(") and ".zip" in m]
    # Up to the run's folder once, and to the drop (a first `open` there finds no folder yet);
    # never downloaded back from the run's folder.
    assert all(m.endswith(".zip.part', 'wb')") for m in opened), opened
    assert len([m for m in opened if "/runs/" in m]) == 1, opened


def test_a_run_file_missing_on_the_server_is_a_french_error(
    sshd: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage = open_storage(places(sshd)[0], tmp_path / "home")
    written = storage.run_folder(6, "factures_imprimer").write("impression.pdf", PDF)
    assert storage.read(written) == PDF
    missing = written.replace("impression.pdf", "traites.pdf")
    with pytest.raises(DeliveryError) as failed:
        storage.read(missing)
    assert str(failed.value) == f"lecture impossible de {missing} : fichier introuvable"
    assert missing.startswith("sftp://") and PASSWORD not in missing
