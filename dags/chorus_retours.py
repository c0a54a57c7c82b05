"""Retours Chorus Pro : rapprochement des statuts de flux et de factures.

Planifié toutes les 15 minutes (heure de Paris) ; en pause à la création. Lit les fichiers de
retour déposés par Chorus Pro dans `out/` (format officiel `CPPStatut`, schéma
`CPPStatutPivot_V1_19.xsd` : statuts de flux 90 à 96, statuts de facture 01 Déposée à 12
Complétée), les applique chacun une seule fois (suivi des échanges, statut Chorus de la facture ;
un statut plus ancien n'écrase jamais un plus récent) puis les range dans `processed/`. Une
facture rejetée (04, 05, flux 93 à 95, ligne d'erreur d'un flux 96) redevient à déposer ; le flux
91 « En cours de transmission » n'est pas un rejet. Un fichier non conforme au schéma, hostile,
en double, trop gros, au nom illisible, ou qui cite une facture jamais déposée sur Chorus va dans
`quarantine/` (sans jamais en remplacer un autre) avec son motif en français dans le rapport ; il
n'est pas appliqué et les fichiers suivants sont traités.

Relancer : une exécution en échec se relance telle quelle (« Clear ») : les fichiers déjà
appliqués ne le sont jamais deux fois (même nom ou même contenu → doublon). Pour rejouer un fichier
mis en quarantaine après correction, remettez-le dans `out/` : il sera lu à la prochaine exécution.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from postier.airflow.chorus_returns_dag import DAG_ID, EVERY_15_MINUTES, START
from postier.env_settings import task_defaults


@task(task_display_name="Rapprocher les retours Chorus Pro", multiple_outputs=False)
def rapprocher(**context: Any) -> dict[str, Any]:
    from postier.airflow.chorus_returns_dag import reconcile_returns

    return reconcile_returns(context)


with DAG(
    dag_id=DAG_ID,
    dag_display_name="Retours Chorus Pro",
    description="Rapproche les fichiers de retour Chorus Pro (statuts de flux et de factures).",
    doc_md=__doc__,
    schedule=EVERY_15_MINUTES,
    start_date=START,
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    default_args=task_defaults(),
    tags=["postier", "chorus", "planifié"],
) as dag:
    rapprocher()
