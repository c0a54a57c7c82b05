"""Récupérer les factures à destination de Chorus (factures Envoyé, et Prêt si choisi).

Pour les clients Chorus Pro, chaque facture non encore déposée est contrôlée (SIRET du client,
code service, numéro d'engagement, IBAN de l'émetteur pour un virement) : une facture refusée est
signalée dans le rapport avec son motif et rien n'est déposé pour elle. Les factures « Prêt »
sélectionnées sont d'abord envoyées (« Envoyé au destinataire », date, heure et login, plus
modifiables, archivées dans la GED). Les PDF Factur-X signés partent ensuite en flux EDI
(interface FSO1117A) dans le dossier `in/` du serveur SFTP de Chorus Pro (connexion
`postier_chorus_sftp`, clé d'hôte vérifiée) ; chaque dépôt est noté dans le suivi des échanges
(« rapport d'export du flux EDI »). Le rapport donne le fichier ZIP des factures signées.

Relancer : déclencher de nouveau le DAG avec les mêmes critères ne refait que ce qui reste à faire
(les factures déjà déposées ne sont plus sélectionnées, un flux enregistré mais non déposé est
redéposé sous le même nom, jamais en double) ; une tâche de paquets en échec se relance seule depuis
l'interface (« Clear » sur la tâche : elle ne reprend que les paquets restants).
"""

from postier.airflow.dag_factory import build_dag

dag = build_dag("factures_chorus_recuperer", doc_md=__doc__)
