"""Real DAG runs whose files go to an SFTP storage (`POSTIER_STORAGE_URL` on the test sshd):
prepare, send, Chorus collection and print; every file read back over SFTP, none on the disk."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)
from pypdf import PdfReader

from postier.delivery.chorus_edi import unpack
from postier.delivery.chorus_sftp import ChorusSftp


def test_runs_on_an_sftp_storage_keep_every_file_there(
    run_dag,
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    chorus_folder = sshd.folder()
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_CHORUS_SFTP", sshd.airflow_connection(chorus_folder))
    storage = sshd.base / "storage" / tmp_path.name
    storage.mkdir(parents=True)
    for name, value in sshd.storage_environment(storage, "mot-de-passe-secret").items():
        monkeypatch.setenv(name, value)
    with psycopg.connect(postier_env) as conn:
        chorus = insert_customer(conn, channel="chorus", siret="73282932000074")
        insert_invoice(conn, chorus, number="ST-CHORUS")
        insert_invoice(conn, number="ST-PORTAIL")

    assert run_dag("factures_preparer_envoi").state == "success"
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    assert run_dag("factures_chorus_recuperer").state == "success"
    every_sent = {"etats": ["ENVOYE"], "sans_date_edition": False, "sans_dematerialisation": False}
    assert run_dag("factures_imprimer", every_sent).state == "success"

    with psycopg.connect(postier_env) as conn:
        runs = conn.execute("SELECT treatment, output_dir, report FROM runs ORDER BY id").fetchall()
    assert [r[0] for r in runs] == [
        "factures_preparer_envoi",
        "factures_envoyer",
        "factures_chorus_recuperer",
        "factures_imprimer",
    ]
    where = f"sftp://{sshd.host}:{sshd.port}{storage}/runs/"
    assert all(output_dir.startswith(where) for _, output_dir, _ in runs)
    assert all(report["compteurs"]["refusees"] == 0 for *_, report in runs)
    assert "mot-de-passe-secret" not in json.dumps([r[2] for r in runs])
    # Nothing written on the worker's own disk: only in the storage.
    assert not (Path(os.environ["POSTIER_HOME"]) / "runs").exists()

    def remote(location: str) -> bytes:
        assert location.startswith(where)
        with ChorusSftp(sshd.config(sshd.base)) as client:
            with client.sftp.open(location.removeprefix(f"sftp://{sshd.host}:{sshd.port}")) as f:
                return f.read()

    prepare, send, collect, printed = (r[1] for r in runs)
    text = "".join(
        p.extract_text()
        for p in PdfReader(io.BytesIO(remote(f"{prepare}/preparees/ST-CHORUS.pdf"))).pages
    )
    assert "ST-CHORUS" in text
    assert "Traitées" in remote(f"{send}/rapport.md").decode()
    with zipfile.ZipFile(io.BytesIO(remote(f"{collect}/factures-chorus.zip"))) as z:
        assert z.namelist() == ["ST-CHORUS.pdf"]
    (flow,) = [f for f in runs[2][2]["fichiers"] if "/chorus/flux/" in f]
    assert [name for name, _ in unpack(remote(flow), "ST-CHORUS.pdf")] == ["ST-CHORUS.pdf"]
    # What was deposited on Chorus is the flow the storage holds.
    (deposited,) = (chorus_folder / "in").iterdir()
    assert deposited.read_bytes() == remote(flow)
    merged = PdfReader(io.BytesIO(remote(f"{printed}/impression.pdf")))
    text = "".join(page.extract_text() for page in merged.pages)
    assert "ST-CHORUS" in text and "ST-PORTAIL" in text


def test_an_sftp_print_house_drop_is_reached_only_with_its_host_key(
    run_dag,
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    drop = sshd.folder() / "routeur"
    for name, value in sshd.storage_environment(drop, prefix="POSTIER_EXPORT").items():
        monkeypatch.setenv(name, value)
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="EXP-SFTP")
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    monkeypatch.setenv("POSTIER_EXPORT_HOST_KEY", other)

    assert run_dag("factures_exporter_impression").state == "failed"
    assert not drop.exists()  # refused before anything was written

    monkeypatch.setenv("POSTIER_EXPORT_HOST_KEY", sshd.host_key)
    again = {"sans_date_edition": False}
    assert run_dag("factures_exporter_impression", again).state == "success"
    (exported,) = drop.glob("export-*.zip")
    with zipfile.ZipFile(exported) as z:
        assert sorted(z.namelist()) == ["EXP-SFTP.pdf", "index.csv"]
