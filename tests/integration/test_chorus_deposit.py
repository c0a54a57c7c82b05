"""Chorus Pro deposit (`factures_chorus_recuperer`) against a real sshd and PostgreSQL.

Every assertion on a deposit reads the flow back from the SFTP folder and unpacks it.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import facturx
import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.sshd import SshServer

from postier.delivery.chorus_edi import FLOW_NAME, parse_flow_name, unpack
from postier.delivery.chorus_sftp import ChorusSftp, SftpConfig
from postier.documents import verify_pdf
from postier.errors import ConfigurationError, DeliveryError
from postier.pipeline.context import Environment
from postier.pipeline.reports import finalize, write_report
from postier.pipeline.runs import process_chunk, start_run

VALID_SIRET = "73282932000074"
TREATMENT = "factures_chorus_recuperer"


@pytest.fixture
def folder(sshd: SshServer) -> Path:
    return sshd.folder()


@pytest.fixture
def env(db_dsn: str, tmp_path: Path, sshd: SshServer, folder: Path) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home", chorus_sftp=sshd.config(folder))


def chorus_customer(conn: psycopg.Connection, **values: Any) -> int:
    return insert_customer(conn, **({"channel": "chorus", "siret": VALID_SIRET} | values))


def collect(env: Environment, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run as the DAG does it: select, every chunk, finalize, report (returned)."""
    external = f"{TREATMENT}/test-{uuid.uuid4().hex[:8]}"
    started = start_run(env, TREATMENT, params or {}, "jmartin", external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)
    return report_of(env, external)


def report_of(env: Environment, external: str) -> dict[str, Any]:
    files = finalize(env, external)
    write_report(env, external, files)
    with env.connect() as conn:
        row = conn.execute("SELECT report FROM runs WHERE external_id = %s", (external,)).fetchone()
    assert row is not None
    return dict(row[0])


def deposited(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "in").iterdir())}


def trust(env: Environment) -> list[bytes]:
    return [(env.home / "signing" / "demo-ca.der").read_bytes()]


def facturx_number(pdf: bytes) -> str:
    _, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    assert xml, "no factur-x.xml embedded"
    from lxml import etree

    ns = {"rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"}
    ram = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
    ns["ram"] = ram
    return str(etree.fromstring(xml).findtext("rsm:ExchangedDocument/ram:ID", namespaces=ns))


# ------------------------------------------------------------------------------ deposit


def test_deposit_is_a_named_tar_gz_of_signed_facturx_with_zip_and_exchange_log(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="CH-1", send_state="ENVOYE")
    insert_invoice(conn, customer, number="CH-2", send_state="ENVOYE", lines=3)
    insert_invoice(conn, insert_customer(conn), number="PORTAIL-1", send_state="ENVOYE")
    conn.commit()

    report = collect(env)

    assert report["compteurs"]["traitees"] == 2, report["anomalies"]
    ((name, data),) = deposited(folder).items()
    assert FLOW_NAME.fullmatch(name) and name.startswith("FSO1117A_POSTIE_AIFE011117")
    assert "." not in name and data[:2] == b"\x1f\x8b"  # tar.gz, extension removed
    pdfs = dict(unpack(data))
    assert sorted(pdfs) == ["CH-1.pdf", "CH-2.pdf"]
    for file_name, pdf in pdfs.items():
        assert verify_pdf(pdf, trust_roots=trust(env)).valid
        assert facturx_number(pdf) == file_name.removesuffix(".pdf")
    flow = conn.execute(
        "SELECT name, status, sha256, deposited_at IS NOT NULL, invoice_count FROM chorus_flows"
    ).fetchall()
    assert flow == [(name, "deposee", hashlib.sha256(data).hexdigest(), True, 2)]
    invoices = conn.execute(
        "SELECT number, chorus_flow_name, chorus_deposited_at IS NOT NULL, dematerialized_channel "
        "FROM invoices WHERE number LIKE 'CH-%' ORDER BY number"
    ).fetchall()
    assert invoices == [("CH-1", name, True, "chorus"), ("CH-2", name, True, "chorus")]
    exchanges = conn.execute(
        "SELECT i.number, e.partner, e.status, e.report->>'rapport', e.report->>'flux', e.by "
        "FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE e.kind = 'export_chorus' ORDER BY i.number"
    ).fetchall()
    assert exchanges == [
        ("CH-1", "CHORUS", "deposee", "rapport d'export du flux EDI", name, "jmartin"),
        ("CH-2", "CHORUS", "deposee", "rapport d'export du flux EDI", name, "jmartin"),
    ]
    archive = next(f for f in report["fichiers"] if f.endswith(".zip"))
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["CH-1.pdf", "CH-2.pdf"]
        assert z.read("CH-2.pdf") == pdfs["CH-2.pdf"]
    assert any(f.endswith(name) for f in report["fichiers"])  # the flow file, as deposited


def test_ready_invoices_are_sent_first_then_deposited_from_the_ged(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="PR-1", send_state="PRET")
    insert_invoice(conn, customer, number="PR-2", send_state="PRET")
    insert_invoice(conn, customer, number="EN-1", send_state="ENVOYE")
    conn.commit()

    # Default states: only « Envoyé » — the ready ones wait.
    assert collect(env)["compteurs"]["traitees"] == 1
    report = collect(env, {"etats": ["PRET", "ENVOYE"]})

    assert report["compteurs"] == {
        "selectionnees": 2,
        "traitees": 2,
        "ignorees": 0,
        "refusees": 0,
        "non_traitees": 0,
    }
    rows = conn.execute(
        "SELECT i.number, i.send_state, i.sent_by, d.sha256 FROM invoices i "
        "JOIN documents d ON d.invoice_id = i.id AND d.kind = 'facture' "
        "WHERE i.number LIKE 'PR-%' ORDER BY i.number"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("PR-1", "ENVOYE", "jmartin"),
        ("PR-2", "ENVOYE", "jmartin"),
    ]
    flows = deposited(folder)
    assert len(flows) == 2
    latest = flows[max(flows, key=lambda n: parse_flow_name(n).sequence)]
    pdfs = dict(unpack(latest))
    # The deposited PDFs are the very ones archived in the GED at sending.
    assert {hashlib.sha256(pdfs[f"{n}.pdf"]).hexdigest() for n, *_ in rows} == {
        r[3].strip() for r in rows
    }
    kinds = conn.execute(
        "SELECT array_agg(e.kind ORDER BY e.id) FROM exchanges e "
        "JOIN invoices i ON i.id = e.invoice_id WHERE i.number = 'PR-1'"
    ).fetchone()
    assert kinds == (
        ["archivage_ged", "dematerialisation_chorus", "changement_etat", "export_chorus"],
    ) or kinds == (
        ["archivage_ged", "changement_etat", "dematerialisation_chorus", "export_chorus"],
    )


def test_single_invoice_flow_is_the_pdf_and_sequences_increase_across_runs(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    sequences: list[int] = []
    for n in range(3):
        insert_invoice(conn, customer, number=f"SEQ-{n}", send_state="ENVOYE")
        conn.commit()
        assert collect(env)["compteurs"]["traitees"] == 1
        newest = max(deposited(folder), key=lambda name: parse_flow_name(name).sequence)
        sequences.append(parse_flow_name(newest).sequence)
        assert deposited(folder)[newest].startswith(b"%PDF-")
    assert sequences == sorted(set(sequences)) and len(deposited(folder)) == 3
    names = [r[0] for r in conn.execute("SELECT name FROM chorus_flows ORDER BY sequence")]
    assert names == sorted(deposited(folder))


def test_a_second_run_deposits_nothing_again(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="ONCE-1", send_state="ENVOYE")
    conn.commit()
    collect(env)
    again = collect(env, {"etats": ["PRET", "ENVOYE"]})
    assert again["compteurs"]["selectionnees"] == 0
    assert len(deposited(folder)) == 1
    assert conn.execute("SELECT count(*) FROM chorus_flows").fetchone() == (1,)


# ------------------------------------------------------------------------- exactly once


@pytest.mark.parametrize("uploaded_before_crash", [False, True])
def test_retried_chunk_redeposits_the_recorded_flow_never_a_second_one(
    env: Environment,
    folder: Path,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    uploaded_before_crash: bool,
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="RT-1", send_state="ENVOYE")
    insert_invoice(conn, customer, number="RT-2", send_state="PRET")
    conn.commit()
    real_upload = ChorusSftp.upload

    def crash(self: ChorusSftp, name: str, data: bytes) -> str:
        if uploaded_before_crash:  # the file reached Chorus, the database never heard of it
            real_upload(self, name, data)
        raise DeliveryError("connexion coupée (simulée)")

    external = f"{TREATMENT}/retry"
    started = start_run(env, TREATMENT, {"etats": ["PRET", "ENVOYE"]}, "jmartin", external)
    monkeypatch.setattr(ChorusSftp, "upload", crash)
    with pytest.raises(DeliveryError):
        process_chunk(env, external, 0)
    recorded = conn.execute("SELECT name, status, sha256 FROM chorus_flows").fetchall()
    assert len(recorded) == 1 and recorded[0][1] == "preparee"
    name = recorded[0][0]
    # Sent on the first attempt (definitive), but not yet deposited: still to do.
    assert conn.execute("SELECT send_state FROM invoices WHERE number = 'RT-2'").fetchone() == (
        "ENVOYE",
    )
    assert len(deposited(folder)) == int(uploaded_before_crash)

    monkeypatch.setattr(ChorusSftp, "upload", real_upload)
    process_chunk(env, external, started["chunks"][0])  # the retry
    report = report_of(env, external)

    assert report["compteurs"]["traitees"] == 2
    assert list(deposited(folder)) == [name]
    assert hashlib.sha256(deposited(folder)[name]).hexdigest() == recorded[0][2]
    assert conn.execute("SELECT name, status FROM chorus_flows").fetchall() == [(name, "deposee")]
    assert conn.execute(
        "SELECT count(*) FROM exchanges WHERE kind = 'export_chorus'"
    ).fetchone() == (2,)
    assert collect(env, {"etats": ["PRET", "ENVOYE"]})["compteurs"]["selectionnees"] == 0
    assert list(deposited(folder)) == [name]


def test_a_flow_left_recorded_by_a_failed_run_is_finished_by_the_next_run(
    env: Environment, folder: Path, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="LEFT-1", send_state="ENVOYE")
    conn.commit()

    def down(self: ChorusSftp, name: str, data: bytes) -> str:
        raise DeliveryError("serveur indisponible (simulé)")

    monkeypatch.setattr(ChorusSftp, "upload", down)
    with pytest.raises(DeliveryError):
        collect(env)
    monkeypatch.undo()
    report = collect(env)
    assert report["compteurs"]["traitees"] == 1
    names = [r[0] for r in conn.execute("SELECT name FROM chorus_flows")]
    assert len(names) == 1 and list(deposited(folder)) == names


# ---------------------------------------------------------------------- checks and errors


def test_invalid_chorus_invoices_are_reported_in_french_and_not_deposited(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    ok = chorus_customer(conn)
    insert_invoice(conn, ok, number="OK-1", send_state="ENVOYE")
    insert_invoice(conn, chorus_customer(conn, siret=None), number="KO-SIRET", send_state="ENVOYE")
    strict = chorus_customer(conn, chorus_engagement_required=True, name="Mairie de Lyon")
    insert_invoice(conn, strict, number="KO-ENGAGE", send_state="PRET")
    conn.commit()

    report = collect(env, {"etats": ["PRET", "ENVOYE"]})

    reasons = {a["facture"]: a["motif"] for a in report["anomalies"]}
    assert set(reasons) == {"KO-SIRET", "KO-ENGAGE"}
    assert "SIRET du client" in reasons["KO-SIRET"]
    assert "numéro d'engagement exigé par Mairie de Lyon" in reasons["KO-ENGAGE"]
    # Checked before anything left: the ready invoice was not sent either.
    state = conn.execute("SELECT send_state FROM invoices WHERE number = 'KO-ENGAGE'").fetchone()
    assert state == ("PRET",)
    ((_, data),) = deposited(folder).items()
    assert data.startswith(b"%PDF-") and facturx_number(data) == "OK-1"


def test_seller_iban_is_required_for_transfers(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="VIR-1", send_state="ENVOYE", payment_mode="virement")
    insert_invoice(conn, customer, number="CHQ-1", send_state="ENVOYE", payment_mode="cheque")
    conn.execute("UPDATE settings SET value = 'FR00 1234' WHERE key = 'EMETTEUR_IBAN'")
    conn.commit()
    report = collect(env)
    ((anomaly),) = report["anomalies"]
    assert anomaly["facture"] == "VIR-1" and "IBAN de l'émetteur" in anomaly["motif"]
    assert [facturx_number(d) for d in deposited(folder).values()] == ["CHQ-1"]


def test_without_a_server_the_report_says_so_and_nothing_changes(
    db_dsn: str, tmp_path: Path, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="NOSRV-1", send_state="PRET")
    conn.commit()
    env = Environment(dsn=db_dsn, home=tmp_path / "home")
    report = collect(env, {"etats": ["PRET"]})
    ((anomaly,),) = [report["anomalies"]]
    assert "aucun serveur Chorus configuré" in anomaly["motif"]
    assert conn.execute("SELECT send_state FROM invoices").fetchone() == ("PRET",)
    assert conn.execute("SELECT count(*) FROM chorus_flows").fetchone() == (0,)


def test_wrong_host_key_is_refused_and_the_flow_waits_for_the_right_one(
    env: Environment, sshd: SshServer, folder: Path, conn: psycopg.Connection, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    impostor = sshd.config(folder, host_key=other)
    with pytest.raises(ConfigurationError, match="clé d'hôte différente"):
        ChorusSftp(impostor).open()

    insert_invoice(conn, chorus_customer(conn), number="HK-1", send_state="ENVOYE")
    conn.commit()
    wrong = Environment(dsn=env.dsn, home=env.home, chorus_sftp=impostor)
    report = collect(wrong)
    (anomaly,) = report["anomalies"]
    assert "clé d'hôte différente" in anomaly["motif"]
    assert deposited(folder) == {}
    # Corrected configuration: the recorded flow is deposited, under its recorded name.
    (name,) = [r[0] for r in conn.execute("SELECT name FROM chorus_flows")]
    assert collect(env)["compteurs"]["traitees"] == 1
    assert list(deposited(folder)) == [name]


# -------------------------------------------------------------------------- SFTP client


def test_client_uploads_through_a_temporary_name_and_replaces_same_name(
    sshd: SshServer, folder: Path
) -> None:
    with ChorusSftp(sshd.config(folder)) as server:
        assert server.upload("FLOW_A", b"first") == str(folder / "in" / "FLOW_A")
        server.upload("FLOW_A", b"second")
        with pytest.raises(DeliveryError, match="refusé"):
            server.upload("../evil", b"x")
    assert deposited(folder) == {"FLOW_A": b"second"}


def test_client_lists_downloads_and_moves_return_files(sshd: SshServer, folder: Path) -> None:
    (folder / "out" / "CPPStatut_2.xml").write_bytes(b"<b/>")
    (folder / "out" / "CPPStatut_1.xml").write_bytes(b"<a/>")
    (folder / "out" / "partial.xml.part").write_bytes(b"<")
    (folder / "out" / "sub").mkdir()
    with ChorusSftp(sshd.config(folder)) as server:
        assert server.list_returns() == ["CPPStatut_1.xml", "CPPStatut_2.xml"]
        assert server.download("CPPStatut_1.xml") == b"<a/>"
        moved = server.move("CPPStatut_1.xml", "processed")
        assert server.list_returns() == ["CPPStatut_2.xml"]
    assert moved == str(folder / "out" / "processed" / "CPPStatut_1.xml")
    assert (folder / "out" / "processed" / "CPPStatut_1.xml").read_bytes() == b"<a/>"


def test_config_hides_secrets_and_reads_urls(sshd: SshServer) -> None:
    config = SftpConfig.from_url(
        "sftp://depot:s3cr%C3%A8t@chorus.example:2222/echanges", "ssh-ed25519 AAAA"
    )
    assert (config.username, config.password, config.port) == ("depot", "s3crèt", 2222)
    assert (config.remote_in, config.remote_out) == ("/echanges/in", "/echanges/out")
    assert "s3cr" not in repr(config) and "PRIVATE" not in repr(sshd.config(sshd.folder()))
    env = Environment(dsn="postgresql://u:pw@h/db", home=Path("/tmp"), chorus_sftp=config)
    assert "s3cr" not in repr(env)


def test_with_chorus_dematerialisation_off_the_zip_is_made_but_nothing_deposited(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="OFF-1", send_state="ENVOYE")
    conn.execute("UPDATE settings SET value = 'false' WHERE key = 'DEMAT_CHORUS'")
    conn.commit()
    report = collect(env)
    assert report["compteurs"]["traitees"] == 1
    assert deposited(folder) == {}
    archive = next(f for f in report["fichiers"] if f.endswith(".zip"))
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["OFF-1.pdf"]
    reason = conn.execute("SELECT reason FROM run_items").fetchone()
    assert reason is not None and "DEMAT_CHORUS" in reason[0]
    # Not deposited: selected again once the dematerialisation is on.
    assert conn.execute("SELECT chorus_deposited_at FROM invoices").fetchone() == (None,)
