"""Airflow plugin: the clerk's Postier pages (invoice list, runs, settings) in the UI menu.

Airflow loads the plugins folder in every process, each task process included (for the
listeners of `postier_run_note`); only the api-server mounts the pages. The app is built when the
api-server asks for it, not when this file is imported: building it (FastAPI, the pages' modules)
cost every task process about half a second of CPU.
"""

from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin


@cache
def _pages() -> list[dict[str, Any]]:
    from postier.airflow.reports_app import create_app

    return [{"app": create_app(), "url_prefix": "/postier", "name": "Postier"}]


class PostierReportsPlugin(AirflowPlugin):
    name = "postier_rapports"
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

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:
        return _pages()
