"""The clerk's day in the Postier pages, in a real Chromium against the real Airflow.

Debian's `chromium` driven by Playwright (`executable_path`: no browser download). Screenshots of
each page are kept under `.artefacts/screenshots/` (not committed; `POSTIER_SCREENSHOTS` moves
them).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import psycopg
import pytest
from builders import insert_customer, insert_invoice
from pypdf import PdfReader

from .live_airflow import ROOT, Airflow
from .test_send_through_airflow import diagnosis, wait_for_run

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path(os.environ.get("POSTIER_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(os.environ.get("POSTIER_SCREENSHOTS", ROOT / ".artefacts" / "screenshots"))
PRINT = "factures_imprimer"
SETTING = "NB_JOURS_AVANT_ENVOI_FACTURES"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert CHROMIUM.exists(), f"{CHROMIUM} absent: run scripts/system-deps (Debian's chromium)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def log_in(page: object, airflow: Airflow, user: str, target: str) -> None:
    """Open `target`: Airflow's login page comes first; sign in as `user` and land on it."""
    page.goto(airflow.base_url + target)  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r"/auth/login"))  # type: ignore[attr-defined]
    page.fill("input[name=username]", user)  # type: ignore[attr-defined]
    page.fill("input[name=password]", airflow.password(user))  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(airflow.base_url + target + "*")  # type: ignore[attr-defined]


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_a_clerks_day_in_the_browser(airflow: Airflow, browser: object) -> None:
    with psycopg.connect(airflow.postier_dsn) as conn:
        customer = insert_customer(conn, channel="papier", name="Mairie de Lyon")
        for n in range(5):
            insert_invoice(conn, customer, number=f"W-{n}", batch_number=601)
        insert_invoice(conn, customer, number="W-9", batch_number=602)
    with airflow.client("admin") as api:
        airflow.wait_for_dag(api, PRINT)
        assert api.patch(f"/dags/{PRINT}", json={"is_paused": False}).status_code == 200

    context = browser.new_context(locale="fr-FR", accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(60_000)

    # The clerk filters the list, unticks two invoices and launches the print.
    log_in(page, airflow, "jmartin", "/postier/factures")
    page.fill("#lot_debut", "601")
    page.fill("#lot_fin", "601")
    page.click("text=Afficher les factures")
    page.wait_for_selector("input[name=facture]")
    shot(page, "01-factures")
    assert page.locator("input[name=facture]:checked").count() == 5
    assert "W-9" not in page.content()
    page.uncheck("[aria-label='cocher W-1']")
    page.uncheck("[aria-label='cocher W-3']")
    page.click("button:has-text('Lancer')")
    page.wait_for_url(re.compile(r"/dags/factures_imprimer/runs/"))
    run_id = unquote(page.url.rsplit("/runs/", 1)[1].split("?")[0].split("/")[0])
    page.wait_for_load_state("networkidle")
    shot(page, "02-execution-airflow")
    with airflow.client("jmartin") as api:
        state = wait_for_run(airflow, api, PRINT, run_id)
        assert state == "success", diagnosis(airflow, api, PRINT, run_id)

    # The run's report, from the reports page, and its merged print file.
    with psycopg.connect(airflow.postier_dsn) as conn:
        (postier_run,) = conn.execute(  # type: ignore[misc]
            "SELECT id FROM runs WHERE external_id = %s", (f"{PRINT}/{run_id}",)
        ).fetchone()
    # The Airflow run's note links back to its Postier page.
    airflow_run_page = page.url
    page.goto(airflow_run_page)
    back = page.locator(f"a[href='/postier/executions/{postier_run}']")
    back.first.wait_for()
    shot(page, "02b-execution-airflow-note")
    page.goto(airflow.base_url + (back.first.get_attribute("href") or ""))  # Airflow opens a tab
    assert "Fichiers produits" in page.content()
    page.goto(f"{airflow.base_url}/postier/executions?traitement={PRINT}")
    shot(page, "03-executions")
    assert "terminée" in page.content() and "jmartin" in page.content()
    page.click(f"a[href='/postier/executions/{postier_run}']")
    page.wait_for_selector("text=Fichiers produits")
    shot(page, "04-execution")
    with page.expect_download() as download:
        page.click("a:has-text('impression.pdf')")
    text = "\n".join(
        p.extract_text()
        for p in PdfReader(io.BytesIO(Path(download.value.path()).read_bytes())).pages
    )
    assert "W-0" in text and "W-2" in text and "W-4" in text
    assert "W-1" not in text and "W-3" not in text

    # One invoice's history.
    page.goto(f"{airflow.base_url}/postier/factures/W-0")
    shot(page, "05-facture")
    assert "Opérateur d'édition" in page.content() and "jmartin" in page.content()

    # Settings: read only for the clerk, and a POST with her own valid token is refused.
    page.goto(f"{airflow.base_url}/postier/factures")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    page.goto(f"{airflow.base_url}/postier/parametres")
    shot(page, "06-parametres-lecture")
    assert "Lecture seule" in page.content() and page.locator("input[name=valeur]").count() == 0
    refused = page.request.post(
        f"{airflow.base_url}/postier/parametres",
        form={"cle": SETTING, "valeur": "20", "csrf": token or ""},
    )
    assert refused.status == 403
    page.goto(f"{airflow.base_url}/api/v2/auth/logout")

    # The admin changes a setting and sees the change recorded.
    log_in(page, airflow, "ldurand", "/postier/parametres")
    page.fill(f"[aria-label='{SETTING}']", "20")
    page.locator("form", has=page.locator(f"[aria-label='{SETTING}']")).locator("button").click()
    page.wait_for_selector("text=enregistré")
    shot(page, "07-parametres-modifie")
    history = page.locator("h2:has-text('Historique') + table").inner_text()
    assert "ldurand" in history and SETTING in history and "31" in history and "20" in history

    # Logged out, every page and file is refused.
    page.goto(f"{airflow.base_url}/api/v2/auth/logout")
    context.clear_cookies()
    for path in (
        "/postier/factures",
        "/postier/factures/W-0",
        "/postier/executions",
        f"/postier/executions/{postier_run}",
        f"/postier/executions/{postier_run}/fichiers/impression.pdf",
        "/postier/parametres",
    ):
        response = httpx.get(airflow.base_url + path, cookies=None)
        assert response.status_code in (401, 303), path
        page.goto(airflow.base_url + path)
        assert "/auth/login" in page.url, path
    shot(page, "08-deconnecte")
    context.close()
