"""Remettre en attente l'envoi des factures.

Récupère les factures « Conservé en interne » pour les envoyer : elles passent à « En attente » et
devront être préparées. Déclenché à la main.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_remettre_en_attente", doc_md=__doc__)
