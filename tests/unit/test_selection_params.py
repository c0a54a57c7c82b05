"""Criteria validation: bad input is refused in French before anything is read."""

from __future__ import annotations

from datetime import date

import pytest

from postier.domain.selection import Selection
from postier.domain.states import SendState
from postier.domain.treatments import CATALOGUE, Treatment, TreatmentId
from postier.errors import SelectionError

EA, PR, EN, CI = SendState.EN_ATTENTE, SendState.PRET, SendState.ENVOYE, SendState.CONSERVE_INTERNE


@pytest.mark.parametrize(
    ("treatment", "states", "switches"),
    [
        (TreatmentId.IMPRIMER, {EA, PR, EN}, True),
        (TreatmentId.IMPRIMER_TRAITES, {EA, PR, EN}, True),
        (TreatmentId.PREPARER_ENVOI, {EA}, False),
        (TreatmentId.METTRE_EN_ATTENTE, {PR}, False),
        (TreatmentId.CONSERVER_EN_INTERNE, {EA, PR}, False),
        (TreatmentId.REMETTRE_EN_ATTENTE, {CI}, False),
        (TreatmentId.ENVOYER, {PR}, False),
        (TreatmentId.CHORUS_RECUPERER, {EN}, False),
    ],
)
def test_defaults_follow_the_spec_table(
    treatment: TreatmentId, states: set[SendState], switches: bool
) -> None:
    selection = Selection.defaults(treatment)
    assert selection.states == states
    assert selection.only_unedited is switches
    assert selection.only_not_dematerialized is switches


def test_print_accepts_the_complementary_state_kept_internal() -> None:
    selection = Selection.from_params(
        "factures_imprimer", {"etats": ["EN_ATTENTE", "CONSERVE_INTERNE"]}
    )
    assert selection.states == {EA, CI}


@pytest.mark.parametrize(
    "treatment",
    [t for t in CATALOGUE.values() if set(t.allowed_states) != set(SendState)],
    ids=lambda t: t.id.value,
)
def test_a_state_not_allowed_for_the_treatment_is_an_input_error(treatment: Treatment) -> None:
    forbidden = next(s for s in SendState if s not in treatment.allowed_states)
    with pytest.raises(SelectionError) as error:
        Selection.from_params(treatment.id, {"etats": [forbidden.value]})
    assert f"l'état « {forbidden.label} » n'est pas possible" in str(error.value)


def test_criteria_are_parsed_from_form_strings() -> None:
    selection = Selection.from_params(
        "factures_imprimer",
        {
            "lot_debut": "12",
            "lot_fin": 14,
            "date_facture_debut": "01/11/2026",
            "date_facture_fin": "2026-11-30",
            "operateur_creation": " mdupont ",
            "etats": "PRET,ENVOYE",
            "sans_date_edition": "non",
            "sans_dematerialisation": False,
        },
    )
    assert (selection.batch_from, selection.batch_to) == (12, 14)
    assert selection.invoice_date_from == date(2026, 11, 1)
    assert selection.invoice_date_to == date(2026, 11, 30)
    assert selection.created_by == "mdupont"
    assert selection.states == {PR, EN}
    assert not selection.only_unedited and not selection.only_not_dematerialized


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lot_debut": 9, "lot_fin": 3}, "plage de numéros de lot inversée"),
        (
            {"date_facture_debut": "2026-11-30", "date_facture_fin": "2026-11-01"},
            "plage de dates de facture inversée",
        ),
        (
            {
                "date_edition_debut": "2026-11-30",
                "date_edition_fin": "2026-11-01",
                "sans_date_edition": False,
            },
            "plage de dates d'édition inversée",
        ),
        ({"lot_debut": "douze"}, "Numéro de lot (début) : un nombre entier est attendu"),
        ({"lot_fin": -1}, "le numéro doit être compris entre 0 et 2147483647 (reçu « -1 »)"),
        ({"lot_fin": 2**31}, "le numéro doit être compris entre 0 et 2147483647"),
        ({"lot_debut": 10**5000}, "(reçu un nombre d'environ 5001 chiffres)"),
        ({"lot_debut": "9" * 5000}, "compris entre 0 et 2147483647 (reçu « 99999"),
        (
            {"date_edition_fin": "9999-12-31", "sans_date_edition": False},
            "Date d'édition (fin) : date hors des limites (31/12/9999",
        ),
        ({"date_facture_debut": "0001-01-01"}, "date hors des limites"),
        ({"lot_debut": True}, "un nombre entier est attendu"),
        ({"date_facture_debut": "31/02/2026"}, "date invalide « 31/02/2026 »"),
        ({"operateur_creation": "m dupont"}, "Opérateur de création : login invalide"),
        ({"operateur_edition": "x" * 65, "sans_date_edition": False}, "login invalide"),
        ({"etats": ["PERDU"]}, "état d'envoi inconnu « PERDU »"),
        ({"sans_dematerialisation": "peut-être"}, "oui ou non attendu"),
        ({"lot": 3}, "critère(s) inconnu(s) : lot"),
        ({"date_edition_debut": "2026-11-01"}, "incompatible avec une date"),
    ],
)
def test_bad_input_is_refused_with_a_french_message(params: dict, message: str) -> None:
    with pytest.raises(SelectionError) as error:
        Selection.from_params("factures_imprimer", params)
    assert message in str(error.value)
    assert str(error.value).startswith("Critères de sélection invalides")


def test_huge_input_is_not_echoed_whole() -> None:
    with pytest.raises(SelectionError) as error:
        Selection.from_params("factures_imprimer", {"lot_debut": "9" * 5000, "lot_fin": 10**5000})
    assert len(str(error.value)) < 400


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SelectionError) as error:
        Selection.from_params(
            "factures_envoyer", {"lot_debut": 5, "lot_fin": 1, "etats": ["EN_ATTENTE"]}
        )
    assert len(error.value.problems) == 2


def test_print_switches_are_refused_on_other_treatments() -> None:
    with pytest.raises(SelectionError, match="réservé aux traitements d'impression"):
        Selection.from_params("factures_envoyer", {"sans_date_edition": True})


def test_unknown_treatment_names_the_known_ones() -> None:
    with pytest.raises(SelectionError, match="factures_imprimer"):
        Selection.defaults("factures_detruire")


def test_edit_date_range_covers_whole_paris_days() -> None:
    selection = Selection.from_params(
        "factures_imprimer",
        {
            "date_edition_debut": "2026-11-01",
            "date_edition_fin": "2026-11-01",
            "sans_date_edition": False,
        },
    )
    start, end = selection.edited_bounds()
    assert start is not None and end is not None
    assert (end - start).total_seconds() == 24 * 3600
    assert start.utcoffset() is not None  # aware


def test_nightly_window_counts_today() -> None:
    selection = Selection.defaults("factures_envoi_nocturne").created_in_last_days(
        31, date(2026, 12, 31)
    )
    assert selection.created_since == date(2026, 12, 1)
    with pytest.raises(SelectionError, match="NB_JOURS_AVANT_ENVOI_FACTURES"):
        Selection.defaults("factures_envoi_nocturne").created_in_last_days(0, date(2026, 12, 31))


def test_ticked_invoices_are_a_list_of_ids() -> None:
    assert Selection.from_params("factures_imprimer", {"factures": [3, 1]}).invoice_ids == {1, 3}
    assert Selection.from_params("factures_imprimer", {"factures": "4,5"}).invoice_ids == {4, 5}
    assert Selection.defaults("factures_imprimer").invoice_ids is None
    for bad in (["x"], [0], [True], [], [10**5000], ["9" * 5000], [2**63]):
        with pytest.raises(SelectionError, match="Factures cochées"):
            Selection.from_params("factures_imprimer", {"factures": bad})
