"""Envoi nocturne des factures prêtes.

Planifié le dernier jour de chaque mois à 22 h (heure de Paris) ; en pause à la création (inactif
par défaut, comme le prévoit la spécification). Envoie sans confirmation les factures « Prêt »
créées depuis NB_JOURS_AVANT_ENVOI_FACTURES jours ; le login enregistré est celui du traitement
technique (POSTIER_TECHNICAL_LOGIN, par défaut « traitement-nocturne »).

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_envoi_nocturne", doc_md=__doc__)
