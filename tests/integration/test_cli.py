"""The `postier` command line against a real database."""

from __future__ import annotations

import psycopg
import pytest
from builders import insert_invoice

from postier.cli import main


def test_select_prints_the_matching_invoices(
    postier_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(postier_env) as conn:
        insert_invoice(conn, number="FA-CLI-1", send_state="PRET")
        insert_invoice(conn, number="FA-CLI-2")
    assert main(["select", "--treatment", "factures_envoyer"]) == 0
    out = capsys.readouterr()
    assert "FA-CLI-1" in out.out and "FA-CLI-2" not in out.out
    assert "Prêt" in out.out
    assert "1 facture(s)." in out.err


def test_select_refuses_bad_criteria_in_french(
    postier_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["select", "--treatment", "factures_envoyer", "--lot-debut", "9", "--lot-fin", "2"])
    assert code == 2
    assert "plage de numéros de lot inversée" in capsys.readouterr().err


def test_db_migrate_reports_up_to_date(
    postier_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "migrate"]) == 0
    assert "aucune (à jour)" in capsys.readouterr().out
