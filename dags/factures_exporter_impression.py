"""Export des fichiers d'impression (routeur / imprimeur externe).

Sélectionne les factures comme l'impression (mêmes critères, mêmes états par défaut, factures
jamais imprimées et non dématérialisées par défaut), produit un PDF par facture et les remet au
routeur dans un fichier ZIP avec un index CSV (fichier, facture, client, adresse postale, nombre
de pages), déposé dans le dossier configuré (`POSTIER_EXPORT_URL` : dossier local ou URL
`sftp://…` ; à défaut le dossier de l'exécution). C'est une impression réelle : la date, l'heure
d'édition et le login sont mis à jour. Déclenché à la main.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_exporter_impression", doc_md=__doc__)
