"""The « Rapports Postier » pages: every run's report, readable, and nothing outside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from postier.airflow.reports_app import create_app
from postier.pipeline.reports import to_markdown


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("POSTIER_HOME", str(tmp_path))
    report = {
        "execution": 7,
        "traitement": "factures_preparer_envoi",
        "libelle": "Préparer l'envoi des factures",
        "statut": "terminée",
        "mode": "imprimer",
        "lance_par": "jmartin",
        "debut": "2026-12-01T09:00:00+01:00",
        "duree_s": 1.2,
        "criteres": {"etats": ["EN_ATTENTE"]},
        "compteurs": {
            "selectionnees": 2,
            "traitees": 1,
            "ignorees": 0,
            "refusees": 1,
            "non_traitees": 0,
        },
        "anomalies": [{"facture": "FA-9", "statut": "refusée", "motif": "pas d'adresse e-mail"}],
        "fichiers": [],
    }
    folder = tmp_path / "runs" / "000007-factures_preparer_envoi"
    folder.mkdir(parents=True)
    (folder / "rapport.json").write_text(json.dumps(report))
    (folder / "rapport.md").write_text(to_markdown(report))
    (tmp_path / "secret.txt").write_text("ne doit pas sortir")
    return TestClient(create_app(dependencies=[]))


def test_index_lists_each_run_with_who_and_status(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "000007-factures_preparer_envoi" in page.text
    assert "jmartin" in page.text and "terminée" in page.text


def test_a_report_is_rendered_with_its_table_and_reasons(client: TestClient) -> None:
    page = client.get("/000007-factures_preparer_envoi")
    assert page.status_code == 200
    assert "<table>" in page.text and "FA-9" in page.text
    assert "pas d&#x27;adresse e-mail" in page.text or "pas d'adresse e-mail" in page.text


@pytest.mark.parametrize("name", ["..%2Fsecret.txt", "secret.txt", "000008-inconnu"])
def test_nothing_but_run_reports_is_served(client: TestClient, name: str) -> None:
    response = client.get(f"/{name}")
    assert response.status_code == 404
    assert "ne doit pas sortir" not in response.text
