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
from postier.errors import ConfigurationError, DeliveryError, SelectionError
from postier.pipeline.context import Environment
from postier.pipeline.reports import NothingDoneError, finalize, write_report
from postier.pipeline.runs import process_chunk, start_run
from postier.storage import RunFolder

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


def test_collection_takes_sent_invoices_only_and_never_sends(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="PR-1", send_state="PRET")
    insert_invoice(conn, customer, number="EN-1", send_state="ENVOYE")
    conn.commit()

    # « Prêt » cannot even be asked for: sending is definitive and has its own confirmation.
    with pytest.raises(SelectionError, match="Prêt"):
        collect(env, {"etats": ["PRET", "ENVOYE"]})
    report = collect(env)

    assert report["compteurs"]["selectionnees"] == 1 and report["compteurs"]["traitees"] == 1
    assert [facturx_number(d) for d in deposited(folder).values()] == ["EN-1"]
    state = conn.execute("SELECT send_state, sent_at FROM invoices WHERE number = 'PR-1'")
    assert state.fetchone() == ("PRET", None)
    assert conn.execute(
        "SELECT count(*) FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE i.number = 'PR-1'"
    ).fetchone() == (0,)


def send(env: Environment) -> dict[str, Any]:
    """A confirmed send of the « Prêt » invoices, as `factures_envoyer` does it."""
    external = f"factures_envoyer/test-{uuid.uuid4().hex[:8]}"
    started = start_run(env, "factures_envoyer", {}, "jmartin", external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)
    return report_of(env, external)


def ged_copies(conn: psycopg.Connection, env: Environment) -> dict[str, tuple[str, bytes, Any]]:
    """Per invoice number: (sha256 indexed, bytes read back from the GED, deposited_at)."""
    rows = conn.execute(
        "SELECT i.number, d.sha256, d.location, d.deposited_at FROM documents d "
        "JOIN invoices i ON i.id = d.invoice_id WHERE d.kind = 'facture' ORDER BY i.number"
    ).fetchall()
    return {n: (sha.strip(), Path(loc).read_bytes(), at) for n, sha, loc, at in rows}


def test_deposit_is_exactly_the_document_archived_at_sending(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn)
    insert_invoice(conn, customer, number="GED-1", send_state="PRET")
    insert_invoice(conn, customer, number="GED-2", send_state="PRET", lines=2)
    conn.commit()
    send(env)
    archived = ged_copies(conn, env)

    collect(env)

    ((_, data),) = deposited(folder).items()
    pdfs = dict(unpack(data))
    for number, (sha256, ged_bytes, _) in archived.items():
        assert hashlib.sha256(pdfs[f"{number}.pdf"]).hexdigest() == sha256
        assert pdfs[f"{number}.pdf"] == ged_bytes
    # The documents table says which document was deposited, and when.
    assert all(at is not None for *_, at in ged_copies(conn, env).values())
    linked = conn.execute(
        "SELECT count(*) FROM chorus_flow_invoices fi JOIN documents d ON d.id = fi.document_id"
    ).fetchone()
    assert linked == (2,)


def test_an_invoice_sent_while_archiving_was_off_is_archived_before_its_deposit(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="LATE-1", send_state="PRET")
    conn.execute("UPDATE settings SET value = 'false' WHERE key = 'ARCHIVAGE_FACTURES'")
    conn.execute("UPDATE settings SET value = 'false' WHERE key = 'DEMAT_ARTIS'")
    conn.commit()
    send(env)
    assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
    conn.execute("UPDATE settings SET value = 'true' WHERE key = 'ARCHIVAGE_FACTURES'")
    conn.commit()

    collect(env)

    ((_, data),) = deposited(folder).items()
    sha256, ged_bytes, deposited_at = ged_copies(conn, env)["LATE-1"]
    assert data == ged_bytes and hashlib.sha256(data).hexdigest() == sha256
    assert deposited_at is not None
    assert verify_pdf(data, trust_roots=trust(env)).valid
    reason = conn.execute("SELECT version, reason FROM documents").fetchone()
    assert reason is not None and reason[0] == 1 and "archivée au dépôt Chorus" in reason[1]
    kinds = conn.execute("SELECT kind FROM exchanges ORDER BY id").fetchall()
    assert [k for (k,) in kinds][-2:] == ["archivage_ged", "export_chorus"]


def reject(conn: psycopg.Connection, number: str, code: str) -> None:
    """A Chorus Pro rejection as the return flows apply it (status, deposit cleared)."""
    conn.execute(
        "UPDATE invoices SET chorus_status = %s, chorus_status_at = now(), "
        "chorus_deposited_at = NULL WHERE number = %s",
        (code, number),
    )
    conn.commit()


def buyer_reference(pdf: bytes) -> str | None:
    _, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    from lxml import etree

    ram = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
    return etree.fromstring(xml).findtext(f".//{{{ram}}}BuyerReference")


def test_after_a_routing_rejection_a_new_version_is_deposited_beside_the_first(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    customer = chorus_customer(conn, chorus_service_code="SERV-FAUX", chorus_service_required=True)
    insert_invoice(
        conn, customer, number="R04-1", send_state="PRET", chorus_service_code="SERV-FAUX"
    )
    conn.commit()
    send(env)
    collect(env)
    (first_flow,) = deposited(folder)
    reject(conn, "R04-1", "04")
    # Nothing corrected yet: the same data would only be rejected again.
    with pytest.raises(NothingDoneError):  # the only invoice refused: the run fails
        collect(env)
    (report,) = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    (unchanged,) = report["anomalies"]
    assert "rien n'a changé depuis dans la fiche du client" in unchanged["motif"]
    assert list(deposited(folder)) == [first_flow]
    assert conn.execute("SELECT count(*) FROM documents").fetchone() == (1,)
    # Routing data belongs to the customer: corrected there, not on the (immutable) invoice.
    conn.execute("UPDATE customers SET chorus_service_code = 'SERV-OK' WHERE id = %s", (customer,))
    conn.commit()

    report = collect(env)

    assert report["compteurs"]["traitees"] == 1
    (second_flow,) = set(deposited(folder)) - {first_flow}
    first, second = deposited(folder)[first_flow], deposited(folder)[second_flow]
    assert buyer_reference(first) == "SERV-FAUX" and buyer_reference(second) == "SERV-OK"
    assert verify_pdf(second, trust_roots=trust(env)).valid
    versions = conn.execute(
        "SELECT d.version, d.sha256, d.location, d.reason, d.deposited_at, f.name "
        "FROM documents d JOIN chorus_flow_invoices fi ON fi.document_id = d.id "
        "JOIN chorus_flows f ON f.id = fi.flow_id ORDER BY d.version"
    ).fetchall()
    assert [(v[0], v[5]) for v in versions] == [(1, first_flow), (2, second_flow)]
    for (_, sha256, location, _, deposited_at, _), data in zip(
        versions, (first, second), strict=True
    ):
        # Both kept in the GED, each the exact bytes of its deposit, each with its date.
        assert Path(location).read_bytes() == data
        assert hashlib.sha256(data).hexdigest() == sha256.strip()
        assert deposited_at is not None
    assert versions[0][2] != versions[1][2] and "rejet Chorus 04" in versions[1][3]
    assert versions[0][4] < versions[1][4]


def test_after_a_rejection_for_another_reason_the_invoice_is_not_deposited_again(
    env: Environment, folder: Path, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="R05-1", send_state="ENVOYE")
    conn.commit()
    collect(env)
    reject(conn, "R05-1", "05")

    # Status 05 calls for a credit note and a new invoice, not the same invoice again.
    assert collect(env)["compteurs"]["selectionnees"] == 0
    assert len(deposited(folder)) == 1


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
    again = collect(env)
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
    insert_invoice(conn, customer, number="RT-2", send_state="ENVOYE")
    conn.commit()
    real_upload = ChorusSftp.upload

    def crash(self: ChorusSftp, name: str, data: bytes) -> str:
        if uploaded_before_crash:  # the file reached Chorus, the database never heard of it
            real_upload(self, name, data)
        raise DeliveryError("connexion coupée (simulée)")

    external = f"{TREATMENT}/retry"
    started = start_run(env, TREATMENT, {}, "jmartin", external)
    monkeypatch.setattr(ChorusSftp, "upload", crash)
    with pytest.raises(DeliveryError):
        process_chunk(env, external, 0)
    recorded = conn.execute("SELECT name, status, sha256 FROM chorus_flows").fetchall()
    assert len(recorded) == 1 and recorded[0][1] == "preparee"
    name = recorded[0][0]
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
    assert collect(env)["compteurs"]["selectionnees"] == 0
    assert list(deposited(folder)) == [name]


def test_a_pdf_that_cannot_be_written_stops_the_deposit_before_the_upload(
    env: Environment, folder: Path, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_invoice(conn, chorus_customer(conn), number="PDF-1", send_state="ENVOYE")
    conn.commit()
    real_write = RunFolder.write

    def full(self: RunFolder, name: str, data: bytes) -> str:
        if name.startswith("chorus/") and not name.startswith("chorus/flux/"):  # a clerk's PDF
            raise DeliveryError("écriture impossible (simulée) : disque plein")
        return real_write(self, name, data)

    external = f"{TREATMENT}/pdf-first"
    started = start_run(env, TREATMENT, {}, "jmartin", external)
    monkeypatch.setattr(RunFolder, "write", full)
    with pytest.raises(DeliveryError):
        process_chunk(env, external, started["chunks"][0])
    assert deposited(folder) == {}  # nothing on Chorus that the database does not say deposited
    assert "deposee" not in [r[0] for r in conn.execute("SELECT status FROM chorus_flows")]

    monkeypatch.undo()
    process_chunk(env, external, started["chunks"][0])  # the retry
    assert report_of(env, external)["compteurs"]["traitees"] == 1
    assert len(deposited(folder)) == 1


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
    insert_invoice(conn, strict, number="KO-ENGAGE", send_state="ENVOYE")
    conn.commit()

    report = collect(env)

    reasons = {a["facture"]: a["motif"] for a in report["anomalies"]}
    assert set(reasons) == {"KO-SIRET", "KO-ENGAGE"}
    assert "SIRET du client" in reasons["KO-SIRET"]
    assert "numéro d'engagement exigé par Mairie de Lyon" in reasons["KO-ENGAGE"]
    # Checked before anything left: no flow holds the refused ones.
    refused = conn.execute(
        "SELECT count(*) FROM chorus_flow_invoices fi JOIN invoices i ON i.id = fi.invoice_id "
        "WHERE i.number LIKE 'KO-%'"
    ).fetchone()
    assert refused == (0,)
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
    insert_invoice(conn, chorus_customer(conn), number="NOSRV-1", send_state="ENVOYE")
    conn.commit()
    env = Environment(dsn=db_dsn, home=tmp_path / "home")
    # Checked at the start of the run: it fails at once, recorded with its reason.
    with pytest.raises(ConfigurationError, match="aucun serveur Chorus Pro n'est configuré"):
        collect(env)
    ((status, report),) = conn.execute("SELECT status, report FROM runs").fetchall()
    assert status == "en_erreur" and "aucun serveur Chorus Pro" in report["motif"]
    assert conn.execute("SELECT chorus_deposited_at FROM invoices").fetchone() == (None,)
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
    with pytest.raises(NothingDoneError):  # its only invoice refused: the run failed
        collect(wrong)
    (report,) = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
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
