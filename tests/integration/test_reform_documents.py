"""Reform-valid documents from the ERP database: the demo's final documents pass the Factur-X XSD,
the Factur-X EN 16931 schematron and the BR-FR schematron with the units the page prints; the
preparation refuses what cannot be valid; the demo signing certificate names the seller."""

from __future__ import annotations

import collections
import io
from datetime import date
from pathlib import Path

import facturx
import psycopg
from builders import insert_customer, insert_invoice
from facturx_validation import FacturxValidator
from lxml import etree
from pypdf import PdfReader
from treatment_runs import run_treatment as run

from postier.delivery.archive import DocumentArchive
from postier.demo_data import seed
from postier.documents import render_final_invoice, verify_pdf
from postier.documents.units import units
from postier.domain import reform
from postier.domain.states import InvoiceKind
from postier.domain.validation import sending_problems
from postier.pipeline.context import Environment
from postier.store.invoices import load_invoices
from postier.store.settings import load_settings

TODAY = date(2026, 11, 20)
RAM = "{urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100}"


def printed_units(pdf: bytes, descriptions: list[str]) -> list[str]:
    """The unit printed on each line: the page reads cell by cell (description, quantity,
    unit, …); a description wrapped on two lines is found by its first line."""
    text = [
        line.strip()
        for page in PdfReader(io.BytesIO(pdf)).pages
        for line in page.extract_text().splitlines()
    ]
    units_printed = []
    start = 0
    for description in descriptions:
        index = next(i for i in range(start, len(text)) if description.startswith(text[i]))
        while not text[index + 1][:1].isdigit():  # the rest of a wrapped description
            index += 1
        units_printed.append(text[index + 2])
        start = index + 3
    return units_printed


def test_demo_documents_pass_xsd_en16931_and_br_fr_with_the_printed_units(
    conn: psycopg.Connection, facturx_validator: FacturxValidator
) -> None:
    seed(conn, 300, seed=1, today=TODAY)
    seller = load_settings(conn).seller()
    ids = [r[0] for r in conn.execute("SELECT id FROM invoices ORDER BY id")]
    invoices = load_invoices(conn, ids)
    kinds: collections.Counter[str] = collections.Counter()
    failures = []
    label_of = {unit.code: unit.label for unit in units().values()}
    for n, invoice in enumerate(invoices):
        pdf = render_final_invoice(invoice, seller)
        _, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
        report = facturx_validator.validate(xml)
        if not report.valid or report.warnings:
            failures.append(f"{invoice.number}: {report.explain()} {report.warnings}")
        kinds[invoice.kind.value] += 1
        kinds[reform.billing_framework(invoice)] += 1
        kinds["0 €"] += invoice.total_gross == 0
        kinds["plusieurs taux"] += len(invoice.vat_breakdown()) > 1
        kinds["code service et engagement"] += bool(
            invoice.chorus_service_code and invoice.chorus_engagement_number
        )
        kinds["livrée ailleurs"] += bool(invoice.delivery and invoice.delivery.address)
        if n < 40:  # reading the page back is the slow part: the first forty invoices
            codes = [q.get("unitCode") for q in etree.fromstring(xml).iter(f"{RAM}BilledQuantity")]
            descriptions = [line.description for line in invoice.lines]
            assert [label_of[c] for c in codes] == printed_units(pdf, descriptions)
    assert failures == []
    # Every kind of document the demo produces was among them.
    for kind in ("facture", "avoir", "B1", "S1", "M1", "0 €", "plusieurs taux"):
        assert kinds[kind] > 0, kind
    assert kinds["code service et engagement"] > 0 and kinds["livrée ailleurs"] > 0
    credit_notes = [i for i in invoices if i.kind is InvoiceKind.AVOIR]
    assert all(i.credited_invoice is not None for i in credit_notes)
    assert all(i.credited_invoice.invoice_date <= i.invoice_date for i in credit_notes)  # type: ignore[union-attr]


def test_demo_customers_have_their_electronic_address(conn: psycopg.Connection) -> None:
    seed(conn, 100, seed=2, today=TODAY)
    rows = conn.execute("SELECT siren, einvoicing_address, einvoicing_scheme FROM customers")
    for siren, address, scheme in rows:
        assert scheme == "0225" and address.startswith(siren)


def test_prepare_refuses_unknown_units_and_credit_notes_citing_no_invoice(
    db_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_dsn) as conn:
        invoice = insert_invoice(conn, number="FA-ORIGINE")
        insert_invoice(
            conn, number="AV-CITE", kind="avoir", credited_invoice_id=invoice, send_state="PRET"
        )
        insert_invoice(conn, number="AV-ORPHELIN", kind="avoir")
        unknown = insert_invoice(conn, number="FA-UNITE", lines=2)
        conn.execute(
            "UPDATE invoice_lines SET unit = 'SAC' WHERE invoice_id = %s AND position = 2",
            (unknown,),
        )
        conn.execute("UPDATE invoices SET send_state = 'EN_ATTENTE' WHERE number = 'AV-CITE'")
    env = Environment(dsn=db_dsn, home=tmp_path / "home")
    report = run(env, "factures_preparer_envoi")
    with psycopg.connect(db_dsn) as conn:
        states = dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())
    assert states["FA-ORIGINE"] == states["AV-CITE"] == "PRET"
    assert states["AV-ORPHELIN"] == states["FA-UNITE"] == "EN_ATTENTE"
    reasons = {a["facture"]: a["motif"] for a in report["anomalies"]}
    assert "facture d'origine absente" in reasons["AV-ORPHELIN"]
    assert "unité « SAC » de la ligne 2 absente de la table des unités" in reasons["FA-UNITE"]


def test_an_invoice_that_passes_the_checks_but_cannot_render_is_refused_alone_in_its_chunk(
    db_dsn: str, tmp_path: Path
) -> None:
    # The ERP's unit « SAC » on PR-2's second line: nothing the preparation's checks look at
    # (sending_problems), but the Factur-X render refuses it. PR-1, PR-3 and PR-4, in the same
    # chunk before and after it, render.
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, channel="papier")
        ids = {
            f"PR-{n}": insert_invoice(conn, customer, number=f"PR-{n}", lines=2)
            for n in (1, 2, 3, 4)
        }
        conn.execute(
            "UPDATE invoice_lines SET unit = 'SAC' WHERE invoice_id = %s AND position = 2",
            (ids["PR-2"],),
        )
        invoice = load_invoices(conn, [ids["PR-2"]])[0]
    assert sending_problems(invoice) == []
    env = Environment(dsn=db_dsn, home=tmp_path / "home")
    report = run(env, "factures_preparer_envoi")
    run_id = report["execution"]
    with psycopg.connect(db_dsn) as conn:
        invoices = {
            number: (state, fingerprint is not None, changed_by)
            for number, state, fingerprint, changed_by in conn.execute(
                "SELECT number, send_state, fingerprint, state_changed_by FROM invoices"
            )
        }
        items = dict(
            conn.execute(
                "SELECT i.number, r.status FROM run_items r JOIN invoices i ON i.id = r.invoice_id "
                "WHERE r.run_id = %s",
                (run_id,),
            ).fetchall()
        )
        chunks = conn.execute(
            "SELECT count(DISTINCT chunk) FROM run_items WHERE run_id = %s", (run_id,)
        ).fetchone()
        logged = [
            r[0]
            for r in conn.execute(
                "SELECT i.number FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
                "WHERE e.run_id = %s ORDER BY i.number",
                (run_id,),
            )
        ]
        output_dir = conn.execute("SELECT output_dir FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert chunks == (1,)  # PR-2 failed among the others of its chunk
    # The others prepared: Prêt, their fingerprint and stamp, their state change logged, their
    # Factur-X document in the run's folder.
    for number in ("PR-1", "PR-3", "PR-4"):
        assert invoices[number] == ("PRET", True, "jmartin") and items[number] == "traitee"
    prepared = Path(output_dir[0]) / "preparees"  # type: ignore[index]
    assert sorted(p.name for p in prepared.iterdir()) == ["PR-1.pdf", "PR-3.pdf", "PR-4.pdf"]
    for number in ("PR-1", "PR-3", "PR-4"):
        _, xml = facturx.get_xml_from_pdf((prepared / f"{number}.pdf").read_bytes())
        assert f"<ram:ID>{number}</ram:ID>".encode() in xml
    assert logged == ["PR-1", "PR-3", "PR-4"]
    # PR-2 refused with the clerk's reason, and nothing of it written: no state, fingerprint,
    # stamp or exchange, no document in the run's folder (above).
    assert invoices["PR-2"] == ("EN_ATTENTE", False, None) and items["PR-2"] == "en_erreur"
    (anomaly,) = report["anomalies"]
    assert anomaly["facture"] == "PR-2"
    assert "unité « SAC » de la ligne 2 absente de la table des unités" in anomaly["motif"]
    assert report["compteurs"] == {
        "selectionnees": 4,
        "traitees": 3,
        "ignorees": 0,
        "refusees": 1,
        "non_traitees": 0,
    }


def test_demo_signing_certificate_names_the_seller_of_the_settings(
    db_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, channel="papier")
        insert_invoice(conn, customer, number="FA-SIGNEE", send_state="PRET")
        seller_name = load_settings(conn).seller().name
    assert seller_name == "ARTIS"
    env = Environment(dsn=db_dsn, home=tmp_path / "home")  # no postier_signing: the demo key
    run(env, "factures_envoyer")
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT location FROM documents WHERE signed").fetchone()
    assert row is not None
    signed = DocumentArchive(env.archive_url).read(row[0])
    ca = (env.home / "signing" / "demo-ca.der").read_bytes()
    result = verify_pdf(signed, trust_roots=[ca])
    assert result.valid
    assert "ARTIS" in result.signatures[0].signer
    assert "Dupré" not in result.signatures[0].signer


def test_demo_plateforme_customers_are_routable_and_their_invoices_pass_br_fr_none_sent(
    conn: psycopg.Connection, facturx_validator: FacturxValidator
) -> None:
    from stdnum.fr import siren as siren_number

    from postier.domain.validation import sending_problems

    seed(conn, 300, seed=1, today=TODAY, plateforme=True)
    seller = load_settings(conn).seller()
    rows = conn.execute(
        "SELECT c.code, c.siren, c.einvoicing_address, c.einvoicing_scheme, i.id, i.send_state "
        "FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE c.channel = 'plateforme'"
    ).fetchall()
    assert len({r[0] for r in rows}) >= 2, "several plateforme customers"
    for code, siren, address, scheme, _, _ in rows:
        assert siren_number.is_valid(siren) and scheme == "0225" and address.startswith(siren), code
    # None sent yet (the demo's PA has none of them), some ready for the send to deposit.
    states = collections.Counter(r[5] for r in rows)
    assert states["ENVOYE"] == 0 and states["PRET"] > 0
    failures = []
    for invoice in load_invoices(conn, [r[4] for r in rows]):
        assert sending_problems(invoice) == [], invoice.number
        _, xml = facturx.get_xml_from_pdf(render_final_invoice(invoice, seller), check_xsd=False)
        report = facturx_validator.validate(xml)
        if not report.valid or report.warnings:
            failures.append(f"{invoice.number}: {report.explain()} {report.warnings}")
    assert failures == []
