"""The trigger form (Params schema): what JSON Schema can refuse is refused at trigger time,
and every field tells the clerk its rule in French."""

from __future__ import annotations

import copy

import pytest
from dag_files import load_dag

from postier.airflow.dag_factory import IMPLEMENTED
from postier.domain.treatments import CATALOGUE

MANUAL = [t.value for t in IMPLEMENTED if not CATALOGUE[t].scheduled]


def accepts(dag_id: str, name: str, value: object) -> bool:
    from airflow.sdk.definitions.param import ParamValidationError

    param = copy.deepcopy(load_dag(dag_id).params.get_param(name))
    try:
        param.resolve(value)
    except ParamValidationError:
        return False
    return True


@pytest.mark.parametrize("dag_id", MANUAL)
def test_batch_numbers_out_of_range_are_refused_not_clamped(dag_id: str) -> None:
    for name in ("lot_debut", "lot_fin"):
        assert not accepts(dag_id, name, -5) and not accepts(dag_id, name, 2**31)
        assert accepts(dag_id, name, 0) and accepts(dag_id, name, 2**31 - 1)
        assert accepts(dag_id, name, None)
        schema = load_dag(dag_id).params.get_param(name).schema
        # The form clamps a typed number to `minimum`/`maximum` without a word (« -5 » → 0).
        assert "minimum" not in schema and "maximum" not in schema


@pytest.mark.parametrize("dag_id", MANUAL)
def test_dates_and_logins_are_checked_by_the_form(dag_id: str) -> None:
    assert not accepts(dag_id, "date_facture_debut", "2026-13-45")
    assert accepts(dag_id, "date_facture_debut", "2026-11-30")
    assert not accepts(dag_id, "operateur_creation", "m dupont")
    assert not accepts(dag_id, "operateur_creation", "x" * 65)
    assert accepts(dag_id, "operateur_creation", "m.dupont")


@pytest.mark.parametrize("dag_id", MANUAL)
def test_every_field_describes_its_rule_in_french(dag_id: str) -> None:
    params = load_dag(dag_id).params
    for name in params:
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name
    assert "de 0 à 2147483647" in params.get_param("lot_debut").description
    assert "64 caractères au plus" in params.get_param("operateur_edition").description
    assert "Date du 01/01/1900 au 31/12/2199" in params.get_param("date_edition_fin").description
