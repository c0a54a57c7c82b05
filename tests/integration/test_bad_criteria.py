"""Hostile criteria given to a run's start (issue 9, « Bad criteria »): refused in French, the
run recorded as refused with its report, never a row left « en cours »."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from postier.errors import SelectionError
from postier.pipeline.context import Environment
from postier.pipeline.runs import start_run
from postier.store import database


@pytest.fixture
def env(postier_env: str) -> Environment:
    return Environment(dsn=postier_env, home=database.home())


@pytest.mark.parametrize(
    ("treatment", "params", "message"),
    [
        (
            "factures_imprimer",
            {"date_edition_fin": "9999-12-31", "sans_date_edition": False},
            "Date d'édition (fin) : date hors des limites (31/12/9999",
        ),
        (
            "factures_mettre_en_attente",
            {"lot_debut": 10**5000},
            "Numéro de lot (début) : le numéro doit être compris entre 0 et 2147483647",
        ),
        (
            "factures_mettre_en_attente",
            {"lot_fin": "9" * 5000},
            "Numéro de lot (fin) : le numéro doit être compris entre 0 et 2147483647",
        ),
        (
            "factures_imprimer",
            {"etats": ["PERDU", ["x"]], "lot_debut": 1},
            "état d'envoi inconnu « PERDU »",
        ),
    ],
    ids=["edit-date-9999", "integer-5000-digits", "string-5000-digits", "unknown-state"],
)
def test_hostile_criteria_are_refused_in_french_and_leave_no_run_half_made(
    env: Environment, postier_env: str, treatment: str, params: dict, message: str
) -> None:
    with pytest.raises(SelectionError) as error:
        start_run(env, treatment, params, "jmartin", f"{treatment}/bad")
    assert message in str(error.value)
    with psycopg.connect(postier_env) as conn:
        rows = conn.execute("SELECT status, report, criteria FROM runs").fetchall()
    ((status, report, criteria),) = rows
    assert status == "criteres_invalides"
    assert message in report["motif"]
    assert len(str(criteria)) < 200  # what was typed is shown, not stored whole
    assert message in Path(report["rapport"]).read_text()
