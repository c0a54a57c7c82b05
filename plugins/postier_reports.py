"""Airflow plugin: a « Rapports Postier » entry in the UI menu, listing every run report."""

from airflow.plugins_manager import AirflowPlugin

from postier.airflow.reports_app import create_app


class PostierReportsPlugin(AirflowPlugin):
    name = "postier_rapports"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/postier", "name": "Rapports Postier"}]
    external_views = [
        {
            "name": "Rapports Postier",
            "href": "/postier/",
            "destination": "nav",
            "url_route": "postier-rapports",
        }
    ]
