"""Cycle de vie des factures déposées sur la plateforme agréée (statuts 200 à 214).

Planifié toutes les 15 minutes (heure de Paris) ; en pause à la création. Demande à la plateforme
agréée (connexion `postier_plateforme`) les flux de cycle de vie (CDAR, `CustomerInvoiceLC`) arrivés
depuis le dernier relevé, les télécharge, les contrôle (schéma officiel CDAR D22B) et les applique :
une ligne du suivi des échanges par statut, le statut courant de la facture (un statut plus ancien
n'écrase jamais un plus récent), la date d'encaissement pour un 212 Encaissée. Le rapport liste
les statuts reçus, les factures à traiter (210 Refusée, 213 Rejetée, 207 En litige, avec leur
motif), les encaissements et les flux mis en quarantaine (fichier hostile ou non conforme,
facture inconnue ou jamais déposée) avec leur motif ; les autres flux sont appliqués.

Relancer : une exécution en échec (plateforme injoignable) se relance telle quelle (« Clear ») ou
attend la suivante : le relevé reprend après le dernier flux enregistré, aucun flux n'est appliqué
deux fois et aucun n'est perdu.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from postier.airflow.lifecycle_dag import DAG_ID, EVERY_15_MINUTES, START
from postier.env_settings import task_defaults


@task(task_display_name="Relever le cycle de vie des factures", multiple_outputs=False)
def relever(**context: Any) -> dict[str, Any]:
    from postier.airflow.lifecycle_dag import poll_lifecycle

    return poll_lifecycle(context)


with DAG(
    dag_id=DAG_ID,
    dag_display_name="Cycle de vie des factures (plateforme agréée)",
    description="Relève et applique les statuts de cycle de vie (CDAR) de la plateforme agréée.",
    doc_md=__doc__,
    schedule=EVERY_15_MINUTES,
    start_date=START,
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    default_args=task_defaults(),
    tags=["postier", "plateforme", "planifié"],
) as dag:
    relever()
