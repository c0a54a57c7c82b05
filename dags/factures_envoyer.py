"""Envoyer les factures (définitif, après confirmation).

Après la sélection, la tâche « Confirmer l'envoi définitif » affiche ce qui va partir (nombre,
montant, clients, canaux) et le message : « Attention, l'envoi de la facture au destinataire est
définitif. Il ne sera plus possible de modifier la facture après envoi. Souhaitez-vous
poursuivre ? ».
Approuver envoie ; refuser (ou laisser expirer le délai) n'envoie rien. Chaque facture passe à
« Envoyé au destinataire » (date, heure et login), n'est plus modifiable, est signée, archivée dans
la GED si l'archivage est actif, et mise à disposition selon son canal.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_envoyer", doc_md=__doc__)
