"""The clerk's Postier pages against a real database and real runs of the pipeline.

Airflow's auth manager is replaced by a header naming the signed-in user (the browser tests in
`tests/e2e/test_workspace_browser.py` go through the real one); launching a treatment runs the
pipeline itself on the conf the page built, as the DAG's tasks would.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
import treatment_runs
from builders import insert_customer, insert_invoice
from fastapi import Header, HTTPException
from fastapi.testclient import TestClient
from pypdf import PdfReader

from postier.airflow.reports_app import Clerk, create_app
from postier.domain.selection import Selection
from postier.pipeline.context import Environment
from postier.pipeline.runs import process_chunk, start_run
from postier.store.listings import invoice_page

CSRF_KEY = b"test-key"


def run_treatment(env: Environment, treatment: str, conf: dict[str, Any], who: str) -> int:
    """A whole run, as the DAG's tasks chain it; its id."""
    return int(treatment_runs.run_treatment(env, treatment, conf, who)["execution"])


@pytest.fixture
def env(db_dsn: str, tmp_path: Path) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home")


@pytest.fixture
def launched() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def client(env: Environment, launched: list[tuple[str, dict[str, Any]]]) -> Iterator[TestClient]:
    def signed_in(x_login: str | None = Header(None), x_admin: str | None = Header(None)) -> Clerk:
        if not x_login:
            raise HTTPException(status_code=401, detail="Not authenticated")
        return Clerk(x_login, x_admin == "1")

    def launch(who: Clerk, dag_id: str, conf: dict[str, Any], run_id: str) -> str:
        launched.append((dag_id, conf))
        run_treatment(env, dag_id, conf, who.login)
        return f"/dags/{dag_id}/runs/{run_id}"

    app = create_app(signed_in, launch, lambda: env, CSRF_KEY)
    with TestClient(app, follow_redirects=False) as c:
        yield c


CLERK = {"X-Login": "jmartin"}
ADMIN = {"X-Login": "ldurand", "X-Admin": "1"}


def csrf_of(page: str) -> str:
    found = re.search(r"name='csrf' value='([^']+)'", page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def post_form(
    client: TestClient, path: str, pairs: list[tuple[str, str]], headers: dict[str, str]
) -> Any:
    """A browser's form POST (repeated names, urlencoded)."""
    return client.post(
        path,
        content=urlencode(pairs),
        headers=headers | {"Content-Type": "application/x-www-form-urlencoded"},
    )


def pdf_text(path: Path | bytes) -> str:
    import io

    source = io.BytesIO(path) if isinstance(path, bytes) else path
    return "\n".join(p.extract_text() for p in PdfReader(source).pages)


def test_list_shows_the_matching_invoices_and_what_preparation_would_refuse(
    client: TestClient, conn: psycopg.Connection
) -> None:
    no_mail = insert_customer(conn, emails=[], name="Sans Courriel")
    insert_invoice(conn, number="L-1", batch_number=7)
    insert_invoice(conn, no_mail, number="L-2", batch_number=7)
    insert_invoice(conn, number="L-3", batch_number=8)
    insert_invoice(conn, number="L-4", batch_number=7, send_state="PRET")
    conn.commit()
    page = client.get(
        "/factures",
        params={"traitement": "factures_preparer_envoi", "lot_debut": "7", "lot_fin": "7"},
        headers=CLERK,
    )
    assert page.status_code == 200
    assert "L-1" in page.text and "L-2" in page.text
    assert "L-3" not in page.text  # batch 8
    assert "L-4" not in page.text  # Prêt: not selectable for preparation
    assert "n&#x27;a pas d&#x27;adresse e-mail" in page.text  # refusal shown before launching
    assert "120,00\u00a0€" in page.text and "02/11/2026" in page.text
    assert page.text.count("type='checkbox' name='facture'") == 2
    assert len(re.findall(r"value='\d+' checked", page.text)) == 2  # ticked by default


def test_list_validates_criteria_like_the_trigger_form(client: TestClient) -> None:
    page = client.get(
        "/factures",
        params={"traitement": "factures_imprimer", "lot_debut": "9", "lot_fin": "3"},
        headers=CLERK,
    )
    assert page.status_code == 200
    assert "Critères invalides" in page.text and "plage de numéros de lot inversée" in page.text
    assert "name='facture'" not in page.text


def test_list_pages_by_key_in_print_order(conn: psycopg.Connection) -> None:
    for n in range(5):
        insert_invoice(conn, number=f"K-{n}")
    conn.commit()
    selection = Selection.defaults("factures_imprimer")
    first = invoice_page(conn, selection, size=2)
    second = invoice_page(conn, selection, after=first.next_key, size=2)
    last = invoice_page(conn, selection, after=second.next_key, size=2)
    back = invoice_page(conn, selection, before=last.previous_key, size=2)
    numbers = [[r.number for r in p.rows] for p in (first, second, last, back)]
    assert numbers == [["K-0", "K-1"], ["K-2", "K-3"], ["K-4"], ["K-2", "K-3"]]
    assert first.previous_key is None and last.next_key is None


def test_launch_prints_exactly_the_ticked_invoices(
    client: TestClient, conn: psycopg.Connection, launched: list
) -> None:
    ids = {f"T-{n}": insert_invoice(conn, number=f"T-{n}") for n in range(5)}
    conn.commit()
    page = client.get("/factures", params={"traitement": "factures_imprimer"}, headers=CLERK)
    ticked = [ids["T-0"], ids["T-2"], ids["T-4"]]
    form = [("csrf", csrf_of(page.text)), ("traitement", "factures_imprimer")]
    form += [("etats", s) for s in ("EN_ATTENTE", "PRET", "ENVOYE")]
    form += [("sans_date_edition", "oui"), ("sans_dematerialisation", "oui")]
    form += [("mode", "imprimer")] + [("facture", str(i)) for i in ticked]
    response = post_form(client, "/factures/lancer", form, CLERK)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dags/factures_imprimer/runs/manual__")
    assert launched[0][1]["factures"] == ticked
    merged = next(Path(conn.execute("SELECT output_dir FROM runs").fetchone()[0]).glob("imp*.pdf"))
    text = pdf_text(merged)
    assert "T-0" in text and "T-2" in text and "T-4" in text
    assert "T-1" not in text and "T-3" not in text
    edited = dict(conn.execute("SELECT number, edited_by FROM invoices").fetchall())
    assert edited == {
        "T-0": "jmartin",
        "T-1": None,
        "T-2": "jmartin",
        "T-3": None,
        "T-4": "jmartin",
    }


def test_ticked_invoice_whose_state_changed_is_not_processed(
    env: Environment, conn: psycopg.Connection
) -> None:
    waiting = insert_invoice(conn, number="S-1", total_net=0, total_vat=0, total_gross=0)
    sent = insert_invoice(conn, number="S-2", send_state="ENVOYE")
    conn.commit()
    run_id = run_treatment(
        env, "factures_conserver_en_interne", {"factures": [waiting, sent]}, "jmartin"
    )
    states = dict(conn.execute("SELECT number, send_state FROM invoices").fetchall())
    assert states == {"S-1": "CONSERVE_INTERNE", "S-2": "ENVOYE"}
    (selected,) = conn.execute(
        "SELECT count(*) FROM run_items WHERE run_id = %s", (run_id,)
    ).fetchone()  # type: ignore[misc]
    assert selected == 1


def test_post_without_a_valid_csrf_token_changes_nothing(
    client: TestClient, conn: psycopg.Connection, launched: list
) -> None:
    invoice = insert_invoice(conn, number="C-1")
    conn.commit()
    form = {"traitement": "factures_imprimer", "facture": str(invoice), "csrf": "1.forged"}
    assert client.post("/factures/lancer", data=form, headers=CLERK).status_code == 403
    list_page = client.get("/factures", headers=CLERK)
    stolen = csrf_of(list_page.text)  # jmartin's token is worth nothing for ldurand
    change = {"cle": "DEMAT_ARTIS", "valeur": "false", "csrf": stolen}
    assert client.post("/parametres", data=change, headers=ADMIN).status_code == 403
    assert launched == []
    assert conn.execute("SELECT value FROM settings WHERE key = 'DEMAT_ARTIS'").fetchone() == (
        "true",
    )


def test_run_page_lists_every_file_and_serves_them(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    for n in range(2):
        insert_invoice(conn, number=f"R-{n}")
    conn.commit()
    run_id = run_treatment(env, "factures_imprimer", {}, "jmartin")
    page = client.get(f"/executions/{run_id}", headers=CLERK)
    assert page.status_code == 200
    for name in ("impression.pdf", "factures/R-0.pdf", "factures/R-1.pdf", "rapport.json"):
        assert f"/executions/{run_id}/fichiers/{name}'" in page.text
    assert "Fichier d&#x27;impression (toutes les factures)" in page.text
    assert "Sélectionnées" in page.text  # the report itself, rendered
    assert "sélectionnées : 2, traitées : 2, ignorées : 0" in page.text
    assert "Envoyé au destinataire, En attente, Prêt" in page.text and "= oui" in page.text
    merged = client.get(f"/executions/{run_id}/fichiers/impression.pdf", headers=CLERK)
    assert merged.status_code == 200 and merged.headers["content-type"] == "application/pdf"
    assert "R-0" in pdf_text(merged.content) and "R-1" in pdf_text(merged.content)


def test_a_file_link_reaches_nothing_outside_the_run(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, number="X-1")
    conn.commit()
    run_id = run_treatment(env, "factures_imprimer", {}, "jmartin")
    folder = Path(conn.execute("SELECT output_dir FROM runs").fetchone()[0])  # type: ignore[index]
    secret = env.home / "secret.txt"
    secret.write_text("ne doit pas sortir")
    (folder / "lien.txt").symlink_to(secret)
    for name in (
        "../secret.txt",
        "..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "lien.txt",
        "factures/../../secret.txt",
    ):
        response = client.get(f"/executions/{run_id}/fichiers/{name}", headers=CLERK)
        assert response.status_code == 404, name
        assert "ne doit pas sortir" not in response.text
    assert (
        client.get(f"/executions/{run_id + 1}/fichiers/impression.pdf", headers=CLERK).status_code
        == 404
    )


def test_runs_list_filters_and_speaks_french(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, number="E-1")
    conn.commit()
    printed = run_treatment(env, "factures_imprimer", {"mode": "apercu"}, "jmartin")
    held = run_treatment(env, "factures_conserver_en_interne", {}, "ldurand")
    page = client.get("/executions", headers=CLERK)
    assert f"/executions/{printed}'" in page.text and f"/executions/{held}'" in page.text
    assert "sélectionnées : 1" in page.text and "traitées : 1" in page.text
    assert "terminée" in page.text and "Conserver" in page.text
    assert re.search(r"\d\d/\d\d/20\d\d \d\d:\d\d", page.text)
    assert "/dags/factures_imprimer/runs/test-" in page.text  # link to the Airflow run
    mine = client.get("/executions", params={"lance_par": "ldurand"}, headers=CLERK)
    assert f"/executions/{held}'" in mine.text and f"/executions/{printed}'" not in mine.text
    prints = client.get("/executions", params={"traitement": "factures_imprimer"}, headers=CLERK)
    assert f"/executions/{printed}'" in prints.text and f"/executions/{held}'" not in prints.text


def test_invoice_history_shows_exchanges_and_its_archived_signed_pdf(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, number="H-1", send_state="PRET")
    insert_invoice(conn, number="H-2", send_state="PRET")
    conn.commit()
    run_treatment(env, "factures_envoyer", {}, "jmartin")
    preview = run_treatment(
        env, "factures_imprimer", {"mode": "apercu", "sans_dematerialisation": False}, "jmartin"
    )
    conn.execute("UPDATE invoices SET chorus_status = '01', chorus_status_at = now()")
    conn.commit()
    page = client.get("/factures/H-1", headers=CLERK)
    assert page.status_code == 200
    assert "Envoyé au destinataire" in page.text and "jmartin" in page.text
    assert "Suivi des échanges" in page.text and "mise à disposition" in page.text
    assert "signature valide, empreinte vérifiée" in page.text
    assert "01 — Déposée" in page.text
    assert f"/executions/{preview}/fichiers/apercus/H-1.pdf'" in page.text  # its preview
    doc_id, sha256, location = conn.execute(
        "SELECT d.id, d.sha256, d.location FROM documents d JOIN invoices i ON i.id = d.invoice_id "
        "WHERE i.number = 'H-1' AND d.kind = 'facture'"
    ).fetchone()  # type: ignore[misc]
    assert sha256 in page.text
    pdf = client.get(f"/factures/H-1/documents/{doc_id}", headers=CLERK)
    assert pdf.status_code == 200 and hashlib.sha256(pdf.content).hexdigest() == sha256
    # The id of H-1's document does not open through H-2's page.
    assert client.get(f"/factures/H-2/documents/{doc_id}", headers=CLERK).status_code == 404
    assert client.get("/factures/INCONNUE", headers=CLERK).status_code == 404


def test_invoice_history_says_when_its_archived_pdf_is_altered_or_missing(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    insert_invoice(conn, number="A-1", send_state="PRET")
    insert_invoice(conn, number="A-2", send_state="PRET")
    conn.commit()
    run_treatment(env, "factures_envoyer", {}, "jmartin")
    (altered,) = (env.home / "ged").rglob("A-1*.pdf")
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    for missing in (env.home / "ged").rglob("A-2*.pdf"):
        missing.unlink()
    assert "contenu altéré" in client.get("/factures/A-1", headers=CLERK).text
    assert "absent de la GED" in client.get("/factures/A-2", headers=CLERK).text


def test_clerk_reads_settings_admin_changes_them_and_each_change_is_recorded(
    client: TestClient, conn: psycopg.Connection
) -> None:
    page = client.get("/parametres", headers=CLERK)
    assert "NB_JOURS_AVANT_ENVOI_FACTURES" in page.text and "Lecture seule" in page.text
    assert "name='valeur'" not in page.text
    token = csrf_of(client.get("/factures", headers=CLERK).text)
    change = {"cle": "NB_JOURS_AVANT_ENVOI_FACTURES", "valeur": "15", "csrf": token}
    assert client.post("/parametres", data=change, headers=CLERK).status_code == 403

    admin_page = client.get("/parametres", headers=ADMIN)
    change["csrf"] = csrf_of(admin_page.text)
    saved = client.post("/parametres", data=change, headers=ADMIN)
    assert saved.status_code == 303
    bad = client.post("/parametres", data=change | {"valeur": "quinze"}, headers=ADMIN)
    assert bad.status_code == 400 and "nombre attendu" in bad.text

    assert conn.execute(
        "SELECT value FROM settings WHERE key = 'NB_JOURS_AVANT_ENVOI_FACTURES'"
    ).fetchone() == ("15",)
    assert conn.execute(
        "SELECT key, old_value, new_value, changed_by FROM settings_changes"
    ).fetchall() == [("NB_JOURS_AVANT_ENVOI_FACTURES", "31", "15", "ldurand")]
    shown = client.get("/parametres", headers=CLERK).text
    assert "ldurand" in shown and "<td>31</td><td>15</td>" in shown


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/factures"),
        ("GET", "/factures/FA-1"),
        ("GET", "/factures/FA-1/documents/1"),
        ("GET", "/executions"),
        ("GET", "/executions/1"),
        ("GET", "/executions/1/fichiers/impression.pdf"),
        ("GET", "/parametres"),
        ("POST", "/parametres"),
        ("POST", "/factures/lancer"),
    ],
)
def test_anonymous_is_refused_everywhere(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 401


def test_the_record_of_setting_changes_cannot_be_rewritten(conn: psycopg.Connection) -> None:
    from postier.store.settings import change_setting

    assert change_setting(conn, "DEMAT_CHORUS", "non", "ldurand")
    for statement in (
        "UPDATE settings_changes SET changed_by = 'x'",
        "DELETE FROM settings_changes",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match="ne se modifie pas"):
            conn.execute(statement)
        conn.rollback()
    assert conn.execute("SELECT changed_by, new_value FROM settings_changes").fetchall() == [
        ("ldurand", "false")
    ]


def test_list_pages_stay_one_indexed_query_at_100000_invoices(
    conn: psycopg.Connection, owner_dsn: str
) -> None:
    customer = insert_customer(conn)
    conn.execute(
        "INSERT INTO invoices (number, customer_id, invoice_date, due_date, batch_number, "
        "created_by, payment_mode, total_net, total_vat, total_gross) "
        "SELECT 'V-' || lpad(n::text, 7, '0'), %s, date '2026-11-02', date '2026-12-02', n / 1000, "
        "'mdupont', 'virement', 100, 20, 120 FROM generate_series(1, 100000) n",
        (customer,),
    )
    conn.commit()
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("ANALYZE invoices")
        owner.execute("ANALYZE customers")
    selection = Selection.defaults("factures_imprimer")
    deep = invoice_page(conn, selection, after="V-0090000")
    assert [r.number for r in deep.rows][:2] == ["V-0090001", "V-0090002"]
    assert len(deep.rows) == 100 and deep.next_key == "V-0090100"

    # The plan reads the page's rows in index order and stops: no sort of the 100,000 rows.
    from postier.store.selection import where_clause

    where, params = where_clause(selection)
    query = psycopg.sql.SQL(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT i.id FROM invoices i "
        "JOIN customers c ON c.id = i.customer_id WHERE {} AND i.number > %(key)s "
        "ORDER BY i.number LIMIT 101"
    ).format(where)
    plan = conn.execute(query, params | {"key": "V-0090000"}).fetchone()[0][0]  # type: ignore[index]
    text = repr(plan["Plan"])
    assert "'Sort'" not in text and "Index" in text, text
    assert plan["Execution Time"] < 100, plan["Execution Time"]  # milliseconds


def test_a_failed_run_shows_its_reason_and_a_running_one_its_progress(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    from psycopg.types.json import Jsonb

    for n in range(3):
        insert_invoice(conn, number=f"P-{n}")
    conn.commit()
    failed = conn.execute(
        "INSERT INTO runs (treatment, criteria, triggered_by, status, report) "
        "VALUES ('factures_envoyer', '{}', 'jmartin', 'en_erreur', %s) RETURNING id",
        (Jsonb({"motif": "paramètre EMETTEUR_SIRET absent"}),),
    ).fetchone()[0]  # type: ignore[index]
    conn.commit()
    started = start_run(env, "factures_imprimer", {}, "jmartin", "factures_imprimer/en-cours")
    process_chunk(env, "factures_imprimer/en-cours", started["chunks"][0])
    page = client.get("/executions", headers=CLERK).text
    assert "incomplète — paramètre EMETTEUR_SIRET absent" in page
    assert "en cours (3/3 factures traitées)" in page
    assert (
        "paramètre EMETTEUR_SIRET absent" in client.get(f"/executions/{failed}", headers=CLERK).text
    )


def test_a_run_whose_every_invoice_was_refused_says_so_in_the_runs_list(
    client: TestClient, env: Environment, conn: psycopg.Connection
) -> None:
    customer = insert_customer(conn, address_line1="")  # preparation refuses it
    insert_invoice(conn, customer, number="R-REFUS")
    conn.commit()
    report = treatment_runs.run_treatment(env, "factures_preparer_envoi", fails=True)

    assert report["compteurs"]["refusees"] == 1
    page = client.get("/executions", headers=CLERK).text
    assert "incomplète — toutes les factures sélectionnées ont été refusées" in page
    run_page = client.get(f"/executions/{report['execution']}", headers=CLERK).text
    assert "toutes les factures sélectionnées ont été refusées" in run_page
