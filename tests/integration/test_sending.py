"""What a send lets out, and what the bills ask customers to pay, on a real PostgreSQL.

Runs go through the pipeline functions as the DAG tasks call them (start, chunks, report); the
outcome is read back from the database and the run's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from pypdf import PdfReader
from treatment_runs import run_treatment as run

from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.pipeline.runs import start_run
from postier.store.invoices import fingerprint, load_invoices

VALID_IBAN = "FR7630006000011234567890189"


@pytest.fixture
def env(db_dsn: str, tmp_path: Path) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home", workers=1)


def states(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())


def zero_euro_invoice(conn: psycopg.Connection, number: str, **values: Any) -> int:
    invoice = insert_invoice(conn, number=number, total_net=0, total_vat=0, total_gross=0, **values)
    conn.execute(
        "UPDATE invoice_lines SET unit_price = 0, net_amount = 0 WHERE invoice_id = %s",
        (invoice,),
    )
    return invoice


# ---------------------------------------------------------------------- re-check at send


def test_send_refuses_ready_invoices_without_fingerprint_that_their_channel_refuses(
    env: Environment, conn: psycopg.Connection
) -> None:
    # « Prêt » without a fingerprint (never went through the preparation): not a pass.
    no_siret = insert_customer(conn, channel="chorus", siret=None)
    insert_invoice(conn, no_siret, number="KO-SIRET", send_state="PRET")
    insert_invoice(conn, insert_customer(conn, emails=[]), number="KO-MAIL", send_state="PRET")
    insert_invoice(conn, number="OK-1", send_state="PRET")
    conn.commit()

    report = run(env, "factures_envoyer")

    assert states(conn) == {"KO-SIRET": "PRET", "KO-MAIL": "PRET", "OK-1": "ENVOYE"}
    reasons = {a["facture"]: a["motif"] for a in report["anomalies"]}
    assert "SIRET du client" in reasons["KO-SIRET"] and "Chorus Pro" in reasons["KO-SIRET"]
    assert "pas d'adresse e-mail pour le portail" in reasons["KO-MAIL"]
    assert report["compteurs"]["refusees"] == 2 and report["compteurs"]["traitees"] == 1
    # Nothing left for the refused ones: no archive, no exchange but none at all.
    left = conn.execute(
        "SELECT count(*) FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE i.number LIKE 'KO-%'"
    ).fetchone()
    assert left == (0,)


def test_send_rechecks_a_prepared_invoice_whose_customer_changed_since(
    env: Environment, conn: psycopg.Connection
) -> None:
    customer = insert_customer(conn, channel="chorus")
    insert_invoice(conn, customer, number="PREP-1")
    conn.commit()
    assert run(env, "factures_preparer_envoi")["compteurs"]["traitees"] == 1
    # The fingerprint covers the invoice, not its customer: still equal after this.
    conn.execute("UPDATE customers SET siret = NULL WHERE id = %s", (customer,))
    conn.commit()

    report = run(env, "factures_envoyer", fails=True)  # its only invoice refused

    assert states(conn) == {"PREP-1": "PRET"}
    (anomaly,) = report["anomalies"]
    assert "SIRET du client" in anomaly["motif"]


def test_a_chunk_with_a_refused_invoice_stores_each_prepared_ones_own_fingerprint(
    env: Environment, conn: psycopg.Connection
) -> None:
    # The chunk's checks and fingerprints are computed before its documents: the refused
    # invoice (first in the chunk) gets none, each prepared one its own.
    insert_invoice(conn, insert_customer(conn, emails=[]), number="KO-MAIL")
    insert_invoice(conn, number="OK-1")
    insert_invoice(conn, number="OK-2", lines=2)
    conn.commit()

    report = run(env, "factures_preparer_envoi")

    chunks = conn.execute("SELECT count(DISTINCT chunk) FROM run_items").fetchone()
    assert chunks == (1,)
    assert states(conn) == {"KO-MAIL": "EN_ATTENTE", "OK-1": "PRET", "OK-2": "PRET"}
    assert [a["facture"] for a in report["anomalies"]] == ["KO-MAIL"]
    stored = dict(conn.execute("SELECT id, fingerprint FROM invoices").fetchall())
    invoices = load_invoices(conn, list(stored))
    prints = {i.number: fingerprint(i) for i in invoices}
    assert {i.number: stored[i.id] for i in invoices} == {
        "KO-MAIL": None,
        "OK-1": prints["OK-1"],
        "OK-2": prints["OK-2"],
    }


def test_send_refuses_alone_in_its_chunk_an_invoice_whose_factur_x_is_refused(
    env: Environment, conn: psycopg.Connection
) -> None:
    # The chunk makes its invoices' Factur-X XML before their documents: the ERP's unit « SAC »
    # on KO-UNITE's second line (nothing the re-check looks at) refuses it there, between two
    # invoices that are sent.
    insert_invoice(conn, number="OK-1", send_state="PRET")
    refused = insert_invoice(conn, number="KO-UNITE", send_state="PRET", lines=2)
    insert_invoice(conn, number="OK-2", send_state="PRET")
    conn.execute(
        "UPDATE invoice_lines SET unit = 'SAC' WHERE invoice_id = %s AND position = 2", (refused,)
    )
    conn.commit()

    report = run(env, "factures_envoyer")

    chunks = conn.execute("SELECT count(DISTINCT chunk) FROM run_items").fetchone()
    assert chunks == (1,)
    assert states(conn) == {"OK-1": "ENVOYE", "KO-UNITE": "PRET", "OK-2": "ENVOYE"}
    (anomaly,) = report["anomalies"]
    assert anomaly["facture"] == "KO-UNITE"
    assert "unité « SAC » de la ligne 2 absente de la table des unités" in anomaly["motif"]
    left = conn.execute(
        "SELECT count(*) FROM exchanges WHERE invoice_id = %s", (refused,)
    ).fetchone()
    assert left == (0,)


# ------------------------------------------------------------------------------- 0 € invoices


def test_zero_euro_invoice_is_prepared_and_sent_with_a_remark(
    env: Environment, conn: psycopg.Connection
) -> None:
    zero_euro_invoice(conn, "ZERO-1")
    conn.commit()

    prepared = run(env, "factures_preparer_envoi")
    sent = run(env, "factures_envoyer")

    assert states(conn) == {"ZERO-1": "ENVOYE"}
    assert prepared["anomalies"] == [] and sent["anomalies"] == []
    (remark,) = sent["remarques"]
    assert remark["facture"] == "ZERO-1" and "facture à 0 € envoyée" in remark["remarque"]
    assert "0 € préparée" in prepared["remarques"][0]["remarque"]
    markdown = Path(sent["rapport"]).read_text()
    assert "## Remarques" in markdown and "ZERO-1" in markdown


# ----------------------------------------------------------------------------------- bills


def test_bills_are_refused_for_credit_notes_zero_and_negative_amounts(
    env: Environment, conn: psycopg.Connection
) -> None:
    drawee = insert_customer(conn, iban=VALID_IBAN, bic="AGRIFRPPXXX")
    insert_invoice(conn, drawee, number="LCR-OK", payment_mode="lcr")
    insert_invoice(conn, drawee, number="AV-LCR", payment_mode="lcr", kind="avoir")
    zero_euro_invoice(conn, "ZERO-LCR", customer_id=drawee, payment_mode="lcr")
    insert_invoice(
        conn,
        drawee,
        number="NEG-BOR",
        payment_mode="billet_ordre",
        total_net=-100,
        total_vat=-20,
        total_gross=-120,
    )
    conn.commit()

    report = run(env, "factures_imprimer_traites")

    reasons = {a["facture"]: a["motif"] for a in report["anomalies"]}
    assert set(reasons) == {"AV-LCR", "ZERO-LCR", "NEG-BOR"}
    assert "pas de traite pour un avoir" in reasons["AV-LCR"]
    assert "pas de traite pour un montant de 0,00" in reasons["ZERO-LCR"]
    assert "pas de traite pour un montant de -120,00" in reasons["NEG-BOR"]
    merged = next(f for f in report["fichiers"] if f.endswith("traites.pdf"))
    text = "\n".join(page.extract_text() for page in PdfReader(merged).pages)
    assert "LCR-OK" in text
    assert not any(n in text for n in ("AV-LCR", "ZERO-LCR", "NEG-BOR"))


# ---------------------------------------------------------------------------- configuration


def test_send_refuses_portal_dematerialisation_without_the_archive(
    env: Environment, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, number="ART-1", send_state="PRET")
    conn.execute("UPDATE settings SET value = 'false' WHERE key = 'ARCHIVAGE_FACTURES'")
    conn.commit()

    with pytest.raises(ConfigurationError) as refused:
        start_run(env, "factures_envoyer", {}, "jmartin", "factures_envoyer/artis-sans-ged")

    assert "DEMAT_ARTIS" in str(refused.value) and "ARCHIVAGE_FACTURES" in str(refused.value)
    assert "rien n'a été envoyé" in str(refused.value)
    assert states(conn) == {"ART-1": "PRET"}
    assert conn.execute("SELECT count(*) FROM exchanges").fetchone() == (0,)
