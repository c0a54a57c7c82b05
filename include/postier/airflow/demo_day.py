"""`postier demo day`: a realistic day of a billing clerk, run through Airflow on the demo data.

Each treatment runs as a real DAG run (`dag.test()`, in-process, against the project's Airflow
home). The send confirmation is approved automatically — for the demo only; in the UI a clerk
answers it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from postier.airflow.dag_files import DAGS_DIR, load_dag
from postier.delivery.local_pa import LocalPlatform
from postier.delivery.local_sftp import SshServer, start_sshd, stop_sshd
from postier.domain.chorus_status_files import InvoiceLine, invoice_status_file
from postier.domain.selection import PARIS
from postier.store import database

#: The clerk whose day the demo plays (README, « make demo »).
DEMO_LOGIN = "jmartin"


def prepare_airflow_home() -> Path:
    """Airflow's home under `<POSTIER_HOME>/airflow` with its SQLite metadata, migrated."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(database.home() / "airflow")))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_DIR))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(DAGS_DIR.parent / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the demo prints its own
    if not (home / "airflow.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
        )
    return home


def _report(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return dict(row[0])


def _batches_with_zero_invoices(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT batch_number FROM invoices WHERE total_gross = 0 "
            "AND send_state = 'EN_ATTENTE' ORDER BY 1 LIMIT 3"
        ).fetchall()
    return [r[0] for r in rows]


def _local_chorus(home: Path) -> tuple[SshServer, Path]:
    """A local SFTP server standing for Chorus Pro, as the `postier_chorus_sftp` connection."""
    base = home / "chorus-demo"
    shutil.rmtree(base, ignore_errors=True)  # a throwaway server: fresh keys every demo
    server = start_sshd(base)
    folder = server.folder()
    os.environ["AIRFLOW_CONN_POSTIER_CHORUS_SFTP"] = server.airflow_connection(folder)
    return server, folder


def _local_platform() -> LocalPlatform:
    """A local Plateforme Agréée (the AFNOR Flow API on loopback, every request and answer checked
    against the official OpenAPI) as the `postier_plateforme` connection; its secret is drawn at
    random and never printed."""
    platform = LocalPlatform(client_id="postier-demo")
    platform.start()
    os.environ["AIRFLOW_CONN_POSTIER_PLATEFORME"] = platform.airflow_connection()
    return platform


#: What the buyers' side answers, by position among the deposited invoices (number order): the
#: first ones only — the others have no answer yet.
_DEMO_LIFECYCLE: list[tuple[str | tuple[str, str], ...]] = [
    ("200", "201", "202", "203", ("210", "Montant contesté : remise commerciale non appliquée")),
    ("200", "201", "202", "203", ("207", "Quantité livrée inférieure à la quantité facturée")),
    ("200", "201", "202", "203", "204", "205", "211", "212"),
    *[("200", "201", "202", "203", "204", "205")] * 3,
    *[("200", "201", "202", "203")] * 4,
]


def _simulated_lifecycle(platform: LocalPlatform, dsn: str) -> int:
    """The local PA produces the lifecycle flows (CDAR, `CustomerInvoiceLC`) the buyers' side
    would to this demo's deposits: statuses a second apart, the last now (after the deposit);
    the number of flows."""
    with platform.state.lock:
        received = [f.flow_id for f in platform.state.flows if f.flow_type == "CustomerInvoice"]
    with psycopg.connect(dsn) as conn:
        numbers = [
            r[0]
            for r in conn.execute(
                "SELECT i.number FROM plateforme_flows f JOIN invoices i ON i.id = f.invoice_id "
                "WHERE f.status = 'deposee' AND f.flow_id = ANY(%s) "
                "ORDER BY i.kind = 'avoir', i.number LIMIT %s",
                (received, len(_DEMO_LIFECYCLE)),
            )
        ]
    return sum(
        len(platform.lifecycle(number, *statuses, every=timedelta(seconds=1)))
        for number, statuses in zip(numbers, _DEMO_LIFECYCLE, strict=False)
    )


#: The simulated answers that are not « 03 Mise à disposition »: (status, comment) by position.
_DEMO_ANSWERS = {
    0: ("04", "Code service inconnu de la structure destinataire"),
    1: ("05", "Montant de la facture contesté"),
}


def _correct_routing_data(dsn: str) -> None:
    """What the clerk does after a 04: correct the customer's routing data (here its service
    code) in the ERP; the invoice itself, sent, stays as it is."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE customers c SET chorus_service_code = 'SERVICE-CORRIGE' FROM invoices i "
            "WHERE i.customer_id = c.id AND i.chorus_status = '04'"
        )


def _simulated_returns(dsn: str) -> bytes | None:
    """What Chorus Pro would answer, as an official CPPStatut invoice-status file: every
    deposited invoice made available (03), the first one rejected for its routing data (04), the
    second for another reason (05)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT i.number, c.siret FROM invoices i JOIN customers c ON c.id = i.customer_id "
            "WHERE i.chorus_deposited_at IS NOT NULL ORDER BY i.number"
        ).fetchall()
        supplier = conn.execute(
            "SELECT value FROM settings WHERE key = 'EMETTEUR_SIRET'"
        ).fetchone()
    if not rows:
        return None  # nothing deposited, nothing to answer
    # After the deposit it answers (whole seconds, rounded up: never before the deposit).
    now = datetime.now(PARIS).replace(microsecond=0) + timedelta(seconds=1)
    return invoice_status_file(
        [
            InvoiceLine(number, code, now, siret, comment)
            for n, (number, siret) in enumerate(rows)
            for code, comment in [_DEMO_ANSWERS.get(n, ("03", ""))]
        ],
        supplier_siret=supplier[0] if supplier else "",
        return_flow=f"DEMO{now:%Y%m%d%H%M%S}",
        produced=now,
    )


def run_day() -> list[tuple[str, str, dict[str, Any]]]:
    """Run the day's treatments; (step, report path, counts) for each."""
    prepare_airflow_home()
    # Stamped like a clerk's trigger from the UI, not with dag.test()'s « dag_test ».
    os.environ.setdefault("POSTIER_DEMO_LOGIN", DEMO_LOGIN)
    dsn = database.resolve_dsn()
    os.environ.setdefault("POSTIER_DB_DSN", dsn)
    with psycopg.connect(dsn) as conn:
        first = conn.execute("SELECT min(batch_number) FROM invoices").fetchone()
    lot = int(first[0]) if first and first[0] is not None else 0
    steps: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (
            "Aperçu des factures du premier lot",
            "factures_imprimer",
            {"mode": "apercu", "lot_debut": lot, "lot_fin": lot},
            {},
        ),
        ("Impression des traites (LCR, billet à ordre)", "factures_imprimer_traites", {}, {}),
        ("Impression des factures jamais imprimées", "factures_imprimer", {"mode": "imprimer"}, {}),
    ]
    for batch in _batches_with_zero_invoices(dsn):
        steps.append(
            (
                f"Conservation en interne du lot {batch} (factures à 0 €)",
                "factures_conserver_en_interne",
                {"lot_debut": batch, "lot_fin": batch, "etats": ["EN_ATTENTE"]},
                {},
            )
        )
    steps += [
        ("Préparation de l'envoi", "factures_preparer_envoi", {}, {}),
        (
            "Mise en attente du premier lot",
            "factures_mettre_en_attente",
            {"lot_debut": lot, "lot_fin": lot},
            {},
        ),
        (
            "Envoi définitif (confirmation approuvée pour la démo)",
            "factures_envoyer",
            {},
            {"mark_success_pattern": "confirmation"},
        ),
        ("Dépôt des factures Chorus Pro (SFTP local)", "factures_chorus_recuperer", {}, {}),
    ]
    done: list[tuple[str, str, dict[str, Any]]] = []
    server, chorus = _local_chorus(database.home())
    platform = _local_platform()
    try:
        for label, dag_id, conf, options in steps:
            done.append(_run(dsn, label, dag_id, conf, options))
            if dag_id == "factures_envoyer" and _simulated_lifecycle(platform, dsn):
                label = "Cycle de vie des factures déposées (statuts simulés de la plateforme)"
                done.append(_run(dsn, label, "plateforme_cycle_de_vie", {}, {}))
        answer = _simulated_returns(dsn)
        if answer is not None:
            returns = f"CPPStatut_demo_{datetime.now(PARIS):%Y%m%d%H%M%S}"  # a new file each demo
            (chorus / "out" / returns).write_bytes(answer)
        done.append(_run(dsn, "Retours Chorus Pro (simulés)", "chorus_retours", {}, {}))
        _correct_routing_data(dsn)
        done.append(
            _run(
                dsn,
                "Nouveau dépôt Chorus après correction du client (rejet 04)",
                "factures_chorus_recuperer",
                {},
                {},
            )
        )
    finally:
        stop_sshd(server)
        platform.stop()
    print(f"\nFlux déposés sur le SFTP Chorus local : {chorus / 'in'}")
    invoices = [f for f in platform.state.flows if f.flow_type == "CustomerInvoice"]
    print(
        f"Factures déposées sur la plateforme agréée locale ({platform.base_url}) : {len(invoices)}"
    )
    with psycopg.connect(dsn) as conn:
        statuses = conn.execute(
            "SELECT count(*) FROM exchanges WHERE kind = 'cycle_de_vie'"
        ).fetchone()
    print(f"Statuts de cycle de vie dans le suivi des échanges : {statuses[0] if statuses else 0}")
    for violation in platform.state.violations:  # none expected: said, never hidden
        print(f"  non conforme à l'OpenAPI AFNOR : {violation}")
    print(f"Fichiers de retour traités : {chorus / 'out' / 'processed'}")
    return done


def _run(
    dsn: str, label: str, dag_id: str, conf: dict[str, Any], options: dict[str, Any]
) -> tuple[str, str, dict[str, Any]]:
    print(f"→ {label} ({dag_id})", flush=True)
    dag_run = load_dag(dag_id).test(run_conf=conf, **options)
    report = _report(dsn)
    path, counts = report["rapport"], report["compteurs"]
    print(f"  {dag_run.state} — {counts} — rapport : {path}", flush=True)
    if deposits := report.get("plateforme"):
        print(
            f"  plateforme agréée : {deposits['deposees']} déposée(s), "
            f"{len(deposits['refusees'])} refusée(s), {len(deposits['en_attente'])} en attente",
            flush=True,
        )
    return label, path, counts
