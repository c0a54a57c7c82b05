"""`POSTIER_DELIVERY_LOCK_WAIT_SECONDS`, read where a send starts: a bad value stops the send
before anything is selected or signed, in French, recorded in the run's report."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice

from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.pipeline.runs import start_run


def test_a_send_with_a_bad_delivery_lock_wait_is_refused_before_anything(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, code="000035", emails=["paul@celeu.fr"])
        insert_invoice(conn, customer, number="140863", send_state="PRET")
    monkeypatch.setenv("POSTIER_DELIVERY_LOCK_WAIT_SECONDS", "5 min")
    env = Environment(dsn=db_dsn, home=tmp_path / "home", workers=1)

    with pytest.raises(ConfigurationError) as refused:
        start_run(env, "factures_envoyer", {}, "mdupont", "envoi")

    assert str(refused.value).startswith(
        "POSTIER_DELIVERY_LOCK_WAIT_SECONDS « 5 min » invalide : un nombre de secondes"
    )
    with psycopg.connect(db_dsn) as conn:
        # Recorded as failed with its reason (the clerk's reports show it), nothing selected.
        assert conn.execute("SELECT status, report->>'motif' FROM runs").fetchall() == [
            ("en_erreur", str(refused.value))
        ]
        assert conn.execute("SELECT count(*) FROM run_items").fetchone() == (0,)
        assert conn.execute("SELECT send_state FROM invoices").fetchall() == [("PRET",)]
