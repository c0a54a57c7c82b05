"""Trigger forms (the clerk's screen) generated from the treatment catalogue."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from postier.domain.selection import (
    BATCH_MAX,
    DATE_MAX,
    DATE_MIN,
    OPERATOR_PATTERN,
    PARAM_LABELS,
)
from postier.domain.states import SEND_STATE_LABELS
from postier.domain.treatments import Treatment, TreatmentId

CRITERIA = "Critères de sélection"

BATCH_RULE = f"nombre entier de 0 à {BATCH_MAX}."
DATE_RULE = f"Date du {DATE_MIN:%d/%m/%Y} au {DATE_MAX:%d/%m/%Y}."
LOGIN_RULE = "Lettres, chiffres et . _ @ - ; 64 caractères au plus."
#: `OPERATOR_PATTERN` of the selection, or blank (a cleared field).
LOGIN_PATTERN = rf"^(\s*|{OPERATOR_PATTERN.pattern.removeprefix('^').removesuffix('$')})$"


def _optional(kind: str, key: str, description: str, **schema: Any) -> Param:
    return Param(
        None,
        type=["null", kind],
        title=PARAM_LABELS[key],
        description=description,
        section=CRITERIA,
        **schema,
    )


SWITCH_RULES = {
    "sans_date_edition": "Coché : seulement les factures jamais imprimées. Décochez-le pour "
    "filtrer sur une date ou un opérateur d'édition.",
    "sans_dematerialisation": "Coché : seulement les factures qui ne sont pas parties par "
    "voie électronique (portail, Chorus Pro).",
}


def trigger_params(t: Treatment) -> dict[str, Param]:
    """The form of one treatment: criteria of the spec, its states, its switches and mode."""
    params: dict[str, Param] = {}
    if t.id is TreatmentId.IMPRIMER:
        params["mode"] = Param(
            "imprimer",
            type="string",
            enum=["imprimer", "apercu"],
            values_display={
                "imprimer": "Imprimer (met à jour la date et le login d'édition)",
                "apercu": "Aperçu (ne met rien à jour)",
            },
            title="Mode",
            description="Aperçu : mêmes documents, filigrane APERÇU, aucune mise à jour.",
        )
    batch = {
        # exclusive bounds on purpose: the trigger form clamps a number to `minimum`/`maximum`
        # silently (« -5 » would become 0), while these are checked and refused at trigger.
        "exclusiveMinimum": -1,
        "exclusiveMaximum": BATCH_MAX + 1,
    }
    login = {"maxLength": 64, "pattern": LOGIN_PATTERN}
    params |= {
        "lot_debut": _optional(
            "integer", "lot_debut", "Premier numéro de lot, " + BATCH_RULE, **batch
        ),
        "lot_fin": _optional(
            "integer",
            "lot_fin",
            "Dernier numéro de lot, " + BATCH_RULE + " Pas avant le premier.",
            **batch,
        ),
        "date_facture_debut": _optional(
            "string",
            "date_facture_debut",
            "Factures datées de ce jour ou après. " + DATE_RULE,
            format="date",
        ),
        "date_facture_fin": _optional(
            "string",
            "date_facture_fin",
            "Factures datées de ce jour ou avant. " + DATE_RULE + " Pas avant le début.",
            format="date",
        ),
        "date_edition_debut": _optional(
            "string",
            "date_edition_debut",
            "Factures imprimées ce jour ou après. " + DATE_RULE,
            format="date",
        ),
        "date_edition_fin": _optional(
            "string",
            "date_edition_fin",
            "Factures imprimées ce jour ou avant. " + DATE_RULE + " Pas avant le début.",
            format="date",
        ),
        "operateur_creation": _optional(
            "string",
            "operateur_creation",
            "Login de l'opérateur qui a créé la facture. " + LOGIN_RULE,
            **login,
        ),
        "operateur_edition": _optional(
            "string",
            "operateur_edition",
            "Login de l'opérateur qui a imprimé la facture. " + LOGIN_RULE,
            **login,
        ),
    }
    allowed = [s.value for s in t.allowed_states]
    params["etats"] = Param(
        [s.value for s in t.default_states],
        type="array",
        items={"type": "string", "enum": allowed},
        uniqueItems=True,
        examples=allowed,
        values_display={s.value: SEND_STATE_LABELS[s] for s in t.allowed_states},
        title=PARAM_LABELS["etats"],
        description=(
            "États d'envoi des factures à traiter, parmi : "
            + ", ".join(SEND_STATE_LABELS[s] for s in t.allowed_states)
            + " ; vide = états par défaut du traitement."
        ),
        section=CRITERIA,
    )
    params["factures"] = Param(
        None,
        type=["null", "array"],
        items={"type": "integer", "minimum": 1},
        uniqueItems=True,
        title=PARAM_LABELS["factures"],
        description=(
            "Rempli par la page « Factures » de Postier (factures cochées) ; vide = toutes les "
            "factures selon les critères."
        ),
        section=CRITERIA,
    )
    if t.print_switches:
        for key in ("sans_date_edition", "sans_dematerialisation"):
            params[key] = Param(
                True,
                type="boolean",
                title=PARAM_LABELS[key],
                description=SWITCH_RULES[key],
                section=CRITERIA,
            )
    return params
