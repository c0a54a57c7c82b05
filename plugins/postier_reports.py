"""Airflow plugin: the clerk's Postier pages (invoice list, runs, settings) in the UI menu."""

from airflow.plugins_manager import AirflowPlugin

from postier.airflow.reports_app import create_app


class PostierReportsPlugin(AirflowPlugin):
    name = "postier_rapports"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/postier", "name": "Postier"}]
    external_views = [
        {
            "name": name,
            "href": f"/postier/{path}",
            "destination": "nav",
            "category": "Postier",
            "url_route": f"postier-{path}",
        }
        for name, path in (
            ("Factures", "factures"),
            ("Exécutions", "executions"),
            ("Paramètres", "parametres"),
        )
    ]
