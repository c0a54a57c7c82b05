"""Préparer l'envoi des factures.

Ne concerne que les factures « En attente ». Chaque facture est contrôlée pour son canal (courriel
du client pour le portail, SIRET / code service / engagement pour Chorus Pro, montants) et son
document définitif Factur-X est produit ; les factures valides passent à « Prêt », les autres
restent « En attente » avec leur motif dans le rapport. Déclenché à la main.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_preparer_envoi", doc_md=__doc__)
