"""Imprimer les factures (ou les prévisualiser).

Sélectionne les factures selon les critères du formulaire, produit un PDF par facture et un
fichier d'impression fusionné (ordre des numéros). Mode « Imprimer » : la date, l'heure d'édition
et le login sont mis à jour. Mode « Aperçu » : même rendu avec un filigrane APERÇU, rien n'est mis
à jour. Déclenché à la main ; rapport écrit par la tâche « Finaliser ».

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà traitées sont signalées « déjà … » dans le rapport) ; une tâche de paquets en
échec se relance seule depuis l'interface (« Clear » sur la tâche : elle ne reprend que les paquets
restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_imprimer", doc_md=__doc__)
