"""Conserver en interne les factures.

Marque les factures qui ne seront pas envoyées au destinataire (par exemple les factures à 0 €) :
elles passent à l'état « Conservé en interne ». Déclenché à la main.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_conserver_en_interne", doc_md=__doc__)
