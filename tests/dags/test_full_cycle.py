"""The whole life of Chorus invoices on demo data, through real DAG runs and real servers:
prepare → send → Chorus collection (SFTP) → Chorus returns → statuses → corrected re-deposit."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice, read_rows
from chorus_return_files import valid
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)
from pypdf import PdfReader

from postier import demo_data
from postier.delivery.chorus_edi import FLOW_NAME, unpack
from postier.domain.chorus_returns import PARIS
from postier.domain.chorus_status_files import InvoiceLine, invoice_status_file


def return_file(supplier: str, statuses: list[tuple[str, str, str]]) -> bytes:
    """An official CPPStatut invoice-status file (validated against the XSD): (invoice number,
    buyer SIRET, status code), dated after the deposit."""
    now = datetime.now(PARIS).replace(microsecond=0)  # + 1 s below: after the deposit
    return valid(
        invoice_status_file(
            [
                InvoiceLine(number, code, now + timedelta(seconds=i + 1), siret, "Retour de test")
                for i, (number, siret, code) in enumerate(statuses)
            ],
            supplier_siret=supplier,
            return_flow="RETOUR1",
            produced=now,
        )
    )


def test_chorus_invoices_from_preparation_to_return_statuses_and_redeposit(  # type: ignore[no-untyped-def]
    run_dag,
    postier_env,
    sshd: SshServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = sshd.folder()
    monkeypatch.setenv("AIRFLOW_CONN_POSTIER_CHORUS_SFTP", sshd.airflow_connection(folder))
    with psycopg.connect(postier_env) as conn:
        demo_data.seed(conn, 200, seed=11)
        # One more sent Chorus invoice, so that three statuses can come back.
        public = insert_customer(conn, channel="chorus", siret="73282932000074")
        insert_invoice(conn, public, number="ZZ-CHORUS-1", send_state="ENVOYE")

    assert run_dag("factures_preparer_envoi").state == "success"
    assert run_dag("factures_envoyer", mark_success_pattern="confirmation").state == "success"
    assert run_dag("factures_chorus_recuperer").state == "success"

    with psycopg.connect(postier_env) as conn:
        deposited = conn.execute(
            "SELECT i.number, c.siret, i.chorus_flow_name FROM invoices i "
            "JOIN customers c ON c.id = i.customer_id "
            "WHERE i.chorus_deposited_at IS NOT NULL ORDER BY i.number"
        ).fetchall()
        supplier = conn.execute(
            "SELECT value FROM settings WHERE key = 'EMETTEUR_SIRET'"
        ).fetchone()[0]  # type: ignore[index]
    assert len(deposited) >= 2, "the demo data must give deposited Chorus invoices"
    flows = {p.name: p.read_bytes() for p in (folder / "in").iterdir()}
    assert all(FLOW_NAME.fullmatch(name) for name in flows)
    in_flows = {name.removesuffix(".pdf") for data in flows.values() for name, _ in unpack(data)}
    assert {number for number, _, _ in deposited} == in_flows

    assert len(deposited) >= 3, "the demo data must give deposited Chorus invoices"
    (rejected, rejected_siret, first_flow), (accepted, accepted_siret, _) = deposited[:2]
    (cancelled, cancelled_siret, _) = deposited[2]
    (folder / "out" / "CPPStatut_1").write_bytes(
        return_file(
            supplier,
            [
                (rejected, rejected_siret, "04"),
                (accepted, accepted_siret, "03"),
                (cancelled, cancelled_siret, "05"),
            ],
        )
    )
    assert run_dag("chorus_retours").state == "success"

    with psycopg.connect(postier_env) as conn:
        status = {
            number: (code, cleared)
            for number, code, cleared in conn.execute(
                "SELECT number, chorus_status, chorus_deposited_at IS NULL FROM invoices "
                "WHERE number = ANY(%s)",
                ([rejected, accepted],),
            )
        }
        returns = conn.execute(
            "SELECT count(*) FROM exchanges WHERE kind = 'retour_chorus'"
        ).fetchone()
        (returns_report,) = conn.execute(
            "SELECT report FROM runs WHERE treatment = 'chorus_retours' ORDER BY id DESC LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    assert status == {rejected: ("04", True), accepted: ("03", False)}
    assert returns == (3,)
    # The advice is one a clerk can follow: a sent invoice cannot be corrected.
    advice = {r["facture"]: r["note"] for r in returns_report["rejets"]}
    assert "corrigez-les dans sa fiche" in advice[rejected]
    assert "établissez un avoir" in advice[cancelled] and "nouvelle facture" in advice[cancelled]
    assert "Que faire" in Path(returns_report["rapport"]).read_text()
    assert not (folder / "out" / "CPPStatut_1").exists()  # set aside once applied

    # The clerk corrects the customer's routing data; the routing rejection then goes out again,
    # alone, in a new flow, as a new archived version; the one rejected for another reason is
    # not deposited again.
    with psycopg.connect(postier_env) as conn:
        conn.execute(
            "UPDATE customers c SET chorus_service_code = 'SERVICE-CORRIGE' FROM invoices i "
            "WHERE i.customer_id = c.id AND i.number = %s",
            (rejected,),
        )
    assert run_dag("factures_chorus_recuperer").state == "success"
    ((flow_name, deposited),) = read_rows(
        postier_env,
        "SELECT chorus_flow_name, chorus_deposited_at IS NOT NULL FROM invoices WHERE number = %s",
        (rejected,),
    )
    versions = read_rows(
        postier_env,
        "SELECT d.version, d.deposited_at IS NOT NULL FROM documents d "
        "JOIN invoices i ON i.id = d.invoice_id WHERE i.number = %s ORDER BY d.version",
        (rejected,),
    )
    cancelled_flow = read_rows(
        postier_env, "SELECT chorus_deposited_at FROM invoices WHERE number = %s", (cancelled,)
    )
    assert deposited and flow_name != first_flow
    assert versions == [(1, True), (2, True)]
    assert cancelled_flow == [(None,)]
    ((_, pdf),) = unpack((folder / "in" / flow_name).read_bytes())  # one invoice: the PDF itself
    assert rejected in "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
