"""The whole life of Chorus invoices on demo data, through real DAG runs and real servers:
prepare → send → Chorus collection (SFTP) → Chorus returns → statuses → corrected re-deposit."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import psycopg
import pytest
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

    (rejected, rejected_siret, first_flow), (accepted, accepted_siret, _) = deposited[:2]
    (folder / "out" / "CPPStatut_1").write_bytes(
        return_file(supplier, [(rejected, rejected_siret, "05"), (accepted, accepted_siret, "03")])
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
    assert status == {rejected: ("05", True), accepted: ("03", False)}
    assert returns == (2,)
    assert not (folder / "out" / "CPPStatut_1").exists()  # set aside once applied

    # The rejected invoice (corrected on Chorus' side) goes out again, alone, in a new flow.
    assert run_dag("factures_chorus_recuperer").state == "success"
    with psycopg.connect(postier_env) as conn:
        row = conn.execute(
            "SELECT chorus_flow_name, chorus_deposited_at IS NOT NULL FROM invoices "
            "WHERE number = %s",
            (rejected,),
        ).fetchone()
    assert row is not None and row[1] and row[0] != first_flow
    ((_, pdf),) = unpack((folder / "in" / row[0]).read_bytes())  # one invoice: the PDF itself
    assert rejected in "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
