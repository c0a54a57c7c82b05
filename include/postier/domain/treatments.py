"""The treatment catalogue: one entry per treatment type of the ERP screen (DESIGN.md §2).

Defaults and allowed states are data here, so that the DAG factory, the trigger forms, the
selection layer and the documentation all read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postier.domain.states import BILL_OF_EXCHANGE_MODES, Channel, PaymentMode, SendState
from postier.errors import SelectionError

EA, PR, EN, CI = SendState.EN_ATTENTE, SendState.PRET, SendState.ENVOYE, SendState.CONSERVE_INTERNE


class TreatmentId(StrEnum):
    IMPRIMER = "factures_imprimer"
    IMPRIMER_TRAITES = "factures_imprimer_traites"
    PREPARER_ENVOI = "factures_preparer_envoi"
    METTRE_EN_ATTENTE = "factures_mettre_en_attente"
    CONSERVER_EN_INTERNE = "factures_conserver_en_interne"
    REMETTRE_EN_ATTENTE = "factures_remettre_en_attente"
    ENVOYER = "factures_envoyer"
    ENVOI_NOCTURNE = "factures_envoi_nocturne"
    CHORUS_RECUPERER = "factures_chorus_recuperer"
    EXPORTER_IMPRESSION = "factures_exporter_impression"


@dataclass(frozen=True)
class Transition:
    """A change of send state: only invoices in `from_states` move to `to_state`."""

    from_states: frozenset[SendState]
    to_state: SendState
    verb: str  # French past participle for reports ("préparée", "envoyée"…)


@dataclass(frozen=True)
class Treatment:
    id: TreatmentId
    label: str
    description: str
    default_states: tuple[SendState, ...]
    allowed_states: tuple[SendState, ...]
    #: The two "uniquement les factures sans …" switches of the print treatments (on by default).
    print_switches: bool = False
    transition: Transition | None = None
    #: Implicit filters the clerk does not choose.
    payment_modes: frozenset[PaymentMode] | None = None
    channel: Channel | None = None
    needs_confirmation: bool = False
    scheduled: bool = False
    #: The run ends with a file made of the whole run (merged print file, Chorus ZIP, export
    #: archive): a « Finaliser » step, which the other treatments do not pay a task for.
    finalized: bool = False


PREPARE = Transition(frozenset({EA}), PR, "préparée")
HOLD = Transition(frozenset({PR}), EA, "remise en attente")
KEEP_INTERNAL = Transition(frozenset({EA, PR}), CI, "conservée en interne")
REQUEUE = Transition(frozenset({CI}), EA, "remise en attente")
SEND = Transition(frozenset({PR}), EN, "envoyée")

_ALL = (EA, PR, EN, CI)

CATALOGUE: dict[TreatmentId, Treatment] = {
    t.id: t
    for t in (
        Treatment(
            TreatmentId.IMPRIMER,
            "Imprimer les factures",
            "Imprime les factures (un PDF par facture et un fichier d'impression fusionné). "
            "Mode « Imprimer » : la date, l'heure d'édition et le login sont mis à jour ; "
            "mode « Aperçu » : rien n'est mis à jour.",
            default_states=(EA, PR, EN),
            allowed_states=_ALL,
            print_switches=True,
            finalized=True,
        ),
        Treatment(
            TreatmentId.IMPRIMER_TRAITES,
            "Imprimer les traites",
            "Imprime les traites (LCR, billet à ordre), une par échéance. Ne concerne que les "
            "factures dont le mode de règlement est Billet à ordre ou LCR.",
            default_states=(EA, PR, EN),
            allowed_states=_ALL,
            print_switches=True,
            payment_modes=BILL_OF_EXCHANGE_MODES,
            finalized=True,
        ),
        Treatment(
            TreatmentId.PREPARER_ENVOI,
            "Préparer l'envoi des factures",
            "Contrôle chaque facture pour son canal d'envoi et produit son document définitif ; "
            "les factures valides passent à l'état « Prêt ».",
            default_states=(EA,),
            allowed_states=(EA,),
            transition=PREPARE,
        ),
        Treatment(
            TreatmentId.METTRE_EN_ATTENTE,
            "Mettre en attente l'envoi des factures",
            "Bascule les factures « Prêt » à l'état « En attente » : elles devront être "
            "préparées de nouveau avant l'envoi.",
            default_states=(PR,),
            allowed_states=(PR,),
            transition=HOLD,
        ),
        Treatment(
            TreatmentId.CONSERVER_EN_INTERNE,
            "Conserver en interne les factures",
            "Marque les factures qui ne seront pas envoyées au destinataire (par exemple les "
            "factures à 0 €) : elles passent à l'état « Conservé en interne ».",
            default_states=(EA, PR),
            allowed_states=(EA, PR),
            transition=KEEP_INTERNAL,
        ),
        Treatment(
            TreatmentId.REMETTRE_EN_ATTENTE,
            "Remettre en attente l'envoi des factures",
            "Récupère les factures « Conservé en interne » pour les envoyer : elles passent à "
            "l'état « En attente » et devront être préparées.",
            default_states=(CI,),
            allowed_states=(CI,),
            transition=REQUEUE,
        ),
        Treatment(
            TreatmentId.ENVOYER,
            "Envoyer les factures",
            "Envoi définitif : la facture passe à l'état « Envoyé au destinataire » et n'est "
            "plus modifiable ; archivage GED, courriel ou Chorus selon les paramètres.",
            default_states=(PR,),
            allowed_states=(PR,),
            transition=SEND,
            needs_confirmation=True,
        ),
        Treatment(
            TreatmentId.ENVOI_NOCTURNE,
            "Envoi nocturne des factures",
            "Envoie, le dernier jour du mois, les factures « Prêt » créées depuis "
            "NB_JOURS_AVANT_ENVOI_FACTURES jours, sans confirmation.",
            default_states=(PR,),
            allowed_states=(PR,),
            transition=SEND,
            scheduled=True,
        ),
        Treatment(
            TreatmentId.CHORUS_RECUPERER,
            "Récupérer les factures à destination de Chorus",
            "Fichier ZIP des factures signées et dépôt EDI sur Chorus Pro des factures « Envoyé "
            "au destinataire » des clients Chorus non encore déposées (le document archivé dans "
            "la GED).",
            default_states=(EN,),
            allowed_states=(EN,),
            channel=Channel.CHORUS,
            finalized=True,
        ),
        Treatment(
            TreatmentId.EXPORTER_IMPRESSION,
            "Export des fichiers d'impression",
            "Exporte les PDF et un index pour un routeur (imprimeur externe).",
            default_states=(EA, PR, EN),
            allowed_states=_ALL,
            print_switches=True,
            finalized=True,
        ),
    )
}


#: The treatments with a « Finaliser » step (`Treatment.finalized`).
FINALIZED = frozenset(t.id for t in CATALOGUE.values() if t.finalized)


def treatment(treatment_id: str | TreatmentId) -> Treatment:
    """The catalogue entry for a DAG id, or a French error naming the known ones."""
    try:
        return CATALOGUE[TreatmentId(treatment_id)]
    except ValueError:
        known = ", ".join(t.value for t in TreatmentId)
        raise SelectionError(
            [f"traitement inconnu « {treatment_id} » (connus : {known})"]
        ) from None
