"""Real DAG run of `factures_chorus_recuperer` against the test sshd, through the Airflow
connection `postier_chorus_sftp` (resolved at execution time, never at parse time)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)

from postier.delivery.chorus_edi import FLOW_NAME, unpack
from postier.documents import verify_pdf


def test_dag_deposits_sent_invoices_in_one_flow_and_writes_the_zip(
    run_dag,
    postier_env: str,
    sshd: SshServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    folder = sshd.folder()
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_CHORUS_SFTP", sshd.airflow_connection(folder))
    with psycopg.connect(postier_env) as conn:
        chorus = insert_customer(conn, channel="chorus", siret="73282932000074")
        insert_invoice(conn, chorus, number="DAG-PRET", send_state="PRET")
        insert_invoice(conn, chorus, number="DAG-ENVOYE-2", send_state="ENVOYE")
        insert_invoice(conn, chorus, number="DAG-ENVOYE", send_state="ENVOYE")
        insert_invoice(
            conn,
            insert_customer(conn, channel="chorus", siret=None),
            number="DAG-KO",
            send_state="ENVOYE",
        )

    dag_run = run_dag("factures_chorus_recuperer")

    assert dag_run.state == "success"
    with psycopg.connect(postier_env) as conn:
        (report,) = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        states = dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())
    assert report["compteurs"]["traitees"] == 2 and report["compteurs"]["refusees"] == 1
    assert "SIRET" in report["anomalies"][0]["motif"]
    # « Prêt » is neither taken nor sent by the collection.
    assert states["DAG-PRET"] == "PRET"
    ((name, data),) = [(p.name, p.read_bytes()) for p in (folder / "in").iterdir()]
    assert FLOW_NAME.fullmatch(name)
    pdfs = dict(unpack(data))
    assert sorted(pdfs) == ["DAG-ENVOYE-2.pdf", "DAG-ENVOYE.pdf"]
    home = Path(report["fichiers"][-1]).parents[1]
    ca = (home / "signing" / "demo-ca.der").read_bytes()
    assert all(verify_pdf(pdf, trust_roots=[ca]).valid for pdf in pdfs.values())
    archive = next(f for f in report["fichiers"] if f.endswith(".zip"))
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(pdfs)
    # The private key never reaches the report.
    assert "PRIVATE KEY" not in json.dumps(report)
