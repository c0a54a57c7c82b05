"""The GED: write-once archive, and `postier ged verify` finding missing or altered documents."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from builders import insert_invoice

from postier.cli import main
from postier.delivery.archive import DocumentArchive
from postier.errors import DeliveryError
from postier.pipeline.archive_check import verify_archive
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run


def test_archive_is_write_once(tmp_path: Path) -> None:
    archive = DocumentArchive(str(tmp_path / "ged"))
    first = archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 original")
    again = archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 original")
    assert again == first  # same bytes: a no-op, retries are safe
    with pytest.raises(DeliveryError, match="autre contenu"):
        archive.put("2026/11/C1/FA-1-facture.pdf", b"%PDF-1 forged")
    assert archive.read(first.location) == b"%PDF-1 original"
    with pytest.raises(DeliveryError, match="chemin GED refusé"):
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
