"""« Rapports Postier »: the run reports, served inside the Airflow UI (menu entry of the plugin).

Read-only, from the report files each run writes under `<POSTIER_HOME>/runs/` (no database, no
secret involved); only authenticated Airflow users reach it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse

from postier.store.database import home

PAGE = """<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1.5rem;max-width:75rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem}}
th{{background:#f3f3f3}}.ko{{color:#b00020}}</style></head><body>{body}</body></html>"""

STATUS = {"terminee": "terminée", "en_erreur": "en erreur", "refusee": "refusée", "en_cours": "…"}


def _reports(runs_dir: Path, limit: int = 200) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(runs_dir.glob("*/rapport.json"), reverse=True)[:limit]:
        try:
            found.append((path.parent.name, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return found


def index_page(runs_dir: Path) -> str:
    rows = []
    for name, r in _reports(runs_dir):
        counts = r.get("compteurs", {})
        status = str(r.get("statut", ""))
        rows.append(
            "<tr>"
            f"<td><a href='{html.escape(name)}'>{html.escape(name)}</a></td>"
            f"<td>{html.escape(str(r.get('libelle', r.get('traitement', ''))))}</td>"
            f"<td>{html.escape(str(r.get('lance_par', '')))}</td>"
            f"<td>{html.escape(str(r.get('debut', '')))}</td>"
            f"<td class='{'ko' if 'incompl' in status or 'erreur' in status else ''}'>"
            f"{html.escape(status)}</td>"
            f"<td>{html.escape(', '.join(f'{k} {v}' for k, v in counts.items()))}</td></tr>"
        )
    table = (
        "<table><tr><th>Exécution</th><th>Traitement</th><th>Lancé par</th><th>Début</th>"
        "<th>Statut</th><th>Compteurs</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>Aucun rapport pour l'instant.</p>"
    )
    return PAGE.format(title="Rapports Postier", body="<h1>Rapports Postier</h1>" + table)


def report_page(runs_dir: Path, name: str) -> str | None:
    """The Markdown report of one run as HTML; None for a name that is not a run's folder."""
    from markdown_it import MarkdownIt

    known = {n for n, _ in _reports(runs_dir, limit=100_000)}
    if name not in known:  # only names listed above: no path tricks
        return None
    markdown = (runs_dir / name / "rapport.md").read_text()
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return PAGE.format(
        title=html.escape(name), body="<p><a href='./'>← tous les rapports</a></p>" + body
    )


def create_app(dependencies: Sequence[DependsParam] | None = None) -> FastAPI:
    """The app; by default every route requires an authenticated Airflow user."""
    if dependencies is None:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        dependencies = [Depends(requires_authenticated())]
    app = FastAPI(title="Rapports Postier", dependencies=list(dependencies))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return index_page(home() / "runs")

    @app.get("/{name}", response_class=HTMLResponse)
    def report(name: str) -> str:
        page = report_page(home() / "runs", name)
        if page is None:
            raise HTTPException(status_code=404, detail="rapport introuvable")
        return page

    return app
