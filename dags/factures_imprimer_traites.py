"""Imprimer les traites (LCR, billet à ordre).

Ne concerne que les factures réglées par LCR ou billet à ordre : une traite par échéance, trois
par page A4, dans un fichier d'impression unique. Déclenché à la main.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_imprimer_traites", doc_md=__doc__)
