"""Trigger forms (the clerk's screen) generated from the treatment catalogue."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from postier.domain.selection import PARAM_LABELS
from postier.domain.states import SEND_STATE_LABELS
from postier.domain.treatments import Treatment, TreatmentId

CRITERIA = "Critères de sélection"


def _optional(kind: str, key: str, description: str, **schema: Any) -> Param:
    return Param(
        None,
        type=["null", kind],
        title=PARAM_LABELS[key],
        description=description,
        section=CRITERIA,
        **schema,
    )


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
    params |= {
        "lot_debut": _optional("integer", "lot_debut", "Premier numéro de lot.", minimum=0),
        "lot_fin": _optional("integer", "lot_fin", "Dernier numéro de lot.", minimum=0),
        "date_facture_debut": _optional(
            "string", "date_facture_debut", "Factures datées de ce jour ou après.", format="date"
        ),
        "date_facture_fin": _optional(
            "string", "date_facture_fin", "Factures datées de ce jour ou avant.", format="date"
        ),
        "date_edition_debut": _optional(
            "string", "date_edition_debut", "Factures imprimées ce jour ou après.", format="date"
        ),
        "date_edition_fin": _optional(
            "string", "date_edition_fin", "Factures imprimées ce jour ou avant.", format="date"
        ),
        "operateur_creation": _optional(
            "string",
            "operateur_creation",
            "Login de l'opérateur qui a créé la facture.",
            maxLength=64,
        ),
        "operateur_edition": _optional(
            "string",
            "operateur_edition",
            "Login de l'opérateur qui a imprimé la facture.",
            maxLength=64,
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
        description="États d'envoi des factures à traiter ; vide = états par défaut du traitement.",
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
            params[key] = Param(True, type="boolean", title=PARAM_LABELS[key], section=CRITERIA)
    return params
