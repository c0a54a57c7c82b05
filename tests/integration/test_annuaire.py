"""The directory (« annuaire »): a `plateforme` buyer's e-invoicing address looked up on a real
local AFNOR Directory Service over HTTP (every request and answer validated against the official
OpenAPI), cached with its date in the database, used by the preparation and told by the send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import facturx
import httpx
import psycopg
import pytest
from builders import insert_customer, insert_invoice
from lxml import etree
from treatment_runs import run_treatment

from postier.delivery import annuaire
from postier.delivery.annuaire import DirectoryClient, DirectoryConfig
from postier.delivery.local_annuaire import LocalDirectory, running_directory
from postier.delivery.local_pa import running_platform
from postier.delivery.plateforme import PlatformConfig, PlatformError, forget_tokens
from postier.pipeline.context import Environment
from postier.pipeline.plateforme import deposit_pending

SIREN, SIRET = "732829320", "73282932000074"
BUYER_URIID = "//ram:BuyerTradeParty/ram:URIUniversalCommunication/ram:URIID"
NS = {"ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"}


@pytest.fixture(scope="module")
def directory_server() -> Iterator[LocalDirectory]:
    yield from running_directory()


@pytest.fixture
def directory(directory_server: LocalDirectory) -> Iterator[LocalDirectory]:
    directory_server.reset()
    forget_tokens()
    yield directory_server
    # Every request we made and every answer it gave conform to the AFNOR Directory OpenAPI.
    assert directory_server.state.violations == []


@pytest.fixture
def config(directory: LocalDirectory) -> DirectoryConfig:
    found = DirectoryConfig.from_env({"POSTIER_ANNUAIRE_URL": directory.env_url()})
    assert found is not None
    return found


@pytest.fixture
def env(db_dsn: str, tmp_path: Path, config: DirectoryConfig) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home", annuaire=config)


def searches(directory: LocalDirectory) -> int:
    return sum(1 for path, _ in directory.state.calls if path.endswith("/search"))


def b2b_invoice(conn: psycopg.Connection, number: str, **customer: Any) -> int:
    """A `plateforme` invoice whose customer has no typed address unless given."""
    values = {"channel": "plateforme", "siren": SIREN, "siret": SIRET, "einvoicing_address": None}
    cid = insert_customer(conn, **(values | customer))
    insert_invoice(conn, cid, number=number)
    conn.commit()
    return cid


def buyer_address(pdf: bytes) -> str:
    """BT-49 of a Factur-X."""
    _, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    (address,) = etree.fromstring(xml).xpath(BUYER_URIID, namespaces=NS)
    assert address.get("schemeID") == "0225"
    return str(address.text)


def prepared_buyer_address(conn: psycopg.Connection, number: str) -> str:
    """BT-49 of the Factur-X the preparation produced for the invoice."""
    row = conn.execute(
        "SELECT r.output FROM run_items r JOIN invoices i ON i.id = r.invoice_id "
        "WHERE i.number = %s AND r.output IS NOT NULL ORDER BY r.run_id DESC LIMIT 1",
        (number,),
    ).fetchone()
    conn.commit()
    assert row is not None
    return buyer_address(Path(row[0]).read_bytes())


def state_of(conn: psycopg.Connection, number: str) -> str:
    row = conn.execute("SELECT send_state FROM invoices WHERE number = %s", (number,)).fetchone()
    conn.commit()
    assert row is not None
    return str(row[0])


def remark(report: dict[str, Any], number: str) -> str:
    (note,) = [r["remarque"] for r in report["remarques"] if r["facture"] == number]
    return str(note)


def refusal(report: dict[str, Any], number: str) -> str:
    (anomaly,) = [a for a in report["anomalies"] if a["facture"] == number]
    return json.dumps(anomaly, ensure_ascii=False)


def today() -> str:
    return datetime.now(ZoneInfo("Europe/Paris")).strftime("%d/%m/%Y")


def age_lookups(conn: psycopg.Connection, days: int) -> None:
    conn.execute(
        "UPDATE directory_lookups SET looked_up_at = now() - make_interval(days => %s)", (days,)
    )
    conn.commit()


# ------------------------------------------------------------------------------------ client


def test_lookup_finds_the_line_the_buyers_invoices_go_to(
    directory: LocalDirectory, config: DirectoryConfig
) -> None:
    directory.add_line(SIREN)
    directory.add_line(SIREN, siret=SIRET)
    directory.add_line(SIREN, siret=SIRET, routing="ACHATS")

    with DirectoryClient(config) as client:
        by_siren = client.lookup(SIREN)
        by_siret = client.lookup(SIREN, SIRET)
        other_facility = client.lookup(SIREN, "73282932000082")
        by_routing = client.lookup(SIREN, SIRET, "ACHATS")
        unknown = client.lookup("356000000")

    assert by_siren is not None and by_siren.address == SIREN
    assert by_siret is not None and by_siret.address == f"{SIREN}_{SIRET}"
    assert other_facility is not None and other_facility.address == SIREN
    assert by_routing is not None and by_routing.address == f"{SIREN}_{SIRET}_ACHATS"
    assert unknown is None


def test_every_page_of_the_buyers_lines_is_read(
    directory: LocalDirectory, config: DirectoryConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annuaire, "PAGE", 2)
    sirets = [f"{SIREN}{n:05d}" for n in range(1, 6)]
    for siret in sirets:
        directory.add_line(SIREN, siret=siret)

    with DirectoryClient(config) as client:
        lines = client.lines(SIREN)

    assert [line["siret"] for line in lines] == sirets
    assert searches(directory) == 3


def test_lines_past_the_last_page_read_fail_the_look_up_in_french(
    directory: LocalDirectory, config: DirectoryConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annuaire, "PAGE", 2)
    monkeypatch.setattr(annuaire, "MAX_PAGES", 2)
    for n in range(1, 5):
        directory.add_line(SIREN, siret=f"{SIREN}{n:05d}")

    with DirectoryClient(config) as client:
        assert len(client.lines(SIREN)) == 4
        directory.add_line(SIREN, siret=f"{SIREN}00005")
        with pytest.raises(PlatformError, match=f"plus de 4 lignes pour le SIREN {SIREN}"):
            client.lookup(SIREN, f"{SIREN}00005")


def test_the_local_directory_rejects_a_request_off_the_official_schema(
    directory_server: LocalDirectory, config: DirectoryConfig
) -> None:
    directory_server.reset()
    token = httpx.post(
        config.token_url,
        data={"grant_type": "client_credentials"},
        auth=(config.client_id, config.client_secret),
    ).json()["access_token"]

    answer = httpx.post(
        config.base_url + "/v1/directory-line/search",
        json={"filters": {"siren": {"op": "equals", "value": SIREN}}, "limit": "dix"},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert answer.status_code == 400
    assert len(directory_server.state.violations) == 1
    directory_server.reset()


# ------------------------------------------------------------------------------- preparation


def test_preparation_uses_the_address_typed_on_the_customer_without_the_directory(
    env: Environment, conn: psycopg.Connection, directory: LocalDirectory
) -> None:
    directory.add_line(SIREN, f"{SIREN}_ANNUAIRE")
    b2b_invoice(conn, "FP-FICHE", einvoicing_address=f"{SIREN}_COMPTA")

    report = run_treatment(env, "factures_preparer_envoi")

    assert state_of(conn, "FP-FICHE") == "PRET"
    assert prepared_buyer_address(conn, "FP-FICHE") == f"{SIREN}_COMPTA"
    assert remark(report, "FP-FICHE").endswith(f"{SIREN}_COMPTA : fiche client")
    assert directory.state.calls == []


def test_preparation_takes_the_address_from_the_directory_and_keeps_it_with_its_date(
    env: Environment, conn: psycopg.Connection, directory: LocalDirectory
) -> None:
    directory.add_line(SIREN, siret=SIRET)
    b2b_invoice(conn, "FP-ANN-1")

    first = run_treatment(env, "factures_preparer_envoi")

    assert state_of(conn, "FP-ANN-1") == "PRET"
    assert prepared_buyer_address(conn, "FP-ANN-1") == f"{SIREN}_{SIRET}"
    assert remark(first, "FP-ANN-1").endswith(f": annuaire, consulté le {today()}")
    cached = conn.execute(
        "SELECT siren, siret, address, now() - looked_up_at < interval '1 minute' "
        "FROM directory_lookups"
    ).fetchall()
    assert cached == [(SIREN, SIRET, f"{SIREN}_{SIRET}", True)]

    # Another invoice of the same buyer: the cached answer, the directory is not asked again.
    b2b_invoice(conn, "FP-ANN-2")
    asked = searches(directory)
    run_treatment(env, "factures_preparer_envoi")
    assert state_of(conn, "FP-ANN-2") == "PRET"
    assert prepared_buyer_address(conn, "FP-ANN-2") == f"{SIREN}_{SIRET}"
    assert searches(directory) == asked


def test_a_look_up_older_than_a_week_is_asked_again(
    env: Environment, conn: psycopg.Connection, directory: LocalDirectory
) -> None:
    directory.add_line(SIREN)
    b2b_invoice(conn, "FP-VIEUX-1")
    run_treatment(env, "factures_preparer_envoi")
    age_lookups(conn, 8)
    # Meanwhile the buyer declared a line for this facility.
    directory.add_line(SIREN, siret=SIRET)
    b2b_invoice(conn, "FP-VIEUX-2")

    run_treatment(env, "factures_preparer_envoi")

    assert prepared_buyer_address(conn, "FP-VIEUX-2") == f"{SIREN}_{SIRET}"
    fresh = conn.execute(
        "SELECT address, now() - looked_up_at < interval '1 minute' FROM directory_lookups"
    ).fetchall()
    assert fresh == [(f"{SIREN}_{SIRET}", True)]


def test_a_directory_down_falls_back_on_a_look_up_of_less_than_a_month(
    env: Environment, conn: psycopg.Connection, directory: LocalDirectory
) -> None:
    directory.add_line(SIREN)
    b2b_invoice(conn, "FP-SECOURS-1")
    run_treatment(env, "factures_preparer_envoi")
    age_lookups(conn, 10)
    consulted = conn.execute("SELECT looked_up_at FROM directory_lookups").fetchone()
    conn.commit()
    assert consulted is not None
    b2b_invoice(conn, "FP-SECOURS-2")
    directory.answer_next(503, times=4)

    report = run_treatment(env, "factures_preparer_envoi")

    assert state_of(conn, "FP-SECOURS-2") == "PRET"
    day = consulted[0].astimezone(ZoneInfo("Europe/Paris")).strftime("%d/%m/%Y")
    assert remark(report, "FP-SECOURS-2").endswith(f"{SIREN} : annuaire, consulté le {day}")


def test_a_buyer_absent_from_the_directory_is_refused(
    env: Environment, conn: psycopg.Connection, directory: LocalDirectory
) -> None:
    directory.add_line("552100554")
    b2b_invoice(conn, "FP-ABSENT")

    report = run_treatment(env, "factures_preparer_envoi", fails=True)

    assert state_of(conn, "FP-ABSENT") == "EN_ATTENTE"
    assert "absent de l'annuaire (SIREN 732829320, SIRET 73282932000074)" in refusal(
        report, "FP-ABSENT"
    )
    counted = conn.execute(
        "SELECT (SELECT count(*) FROM directory_lookups), "
        "(SELECT count(*) FROM invoice_einvoicing_addresses)"
    ).fetchone()
    assert counted == (0, 0)


@pytest.mark.parametrize(
    ("cached_days_ago", "configured", "said"),
    [
        (None, True, "indisponible (HTTP 503"),
        (40, True, "indisponible (HTTP 503"),
        (None, False, "aucun annuaire configuré"),
    ],
)
def test_a_directory_that_cannot_be_asked_without_a_usable_look_up_refuses(
    db_dsn: str,
    tmp_path: Path,
    env: Environment,
    conn: psycopg.Connection,
    directory: LocalDirectory,
    cached_days_ago: int | None,
    configured: bool,
    said: str,
) -> None:
    if cached_days_ago is not None:
        conn.execute(
            "INSERT INTO directory_lookups (siren, siret, address, looked_up_at) "
            "VALUES (%s, %s, %s, now() - make_interval(days => %s))",
            (SIREN, SIRET, SIREN, cached_days_ago),
        )
    b2b_invoice(conn, "FP-INJOIGNABLE")
    directory.answer_next(503, times=4)
    if not configured:
        env = Environment(dsn=db_dsn, home=tmp_path / "home")

    report = run_treatment(env, "factures_preparer_envoi", fails=True)

    assert state_of(conn, "FP-INJOIGNABLE") == "EN_ATTENTE"
    reason = refusal(report, "FP-INJOIGNABLE")
    assert "adresse de facturation électronique du client" in reason and said in reason
    assert "depuis 30 jours pour son SIREN 732829320" in reason
    directory.reset()


# -------------------------------------------------------------------------------------- send


def test_the_send_report_tells_where_each_buyers_address_came_from(
    db_dsn: str,
    tmp_path: Path,
    config: DirectoryConfig,
    conn: psycopg.Connection,
    directory: LocalDirectory,
) -> None:
    directory.add_line(SIREN)
    b2b_invoice(conn, "FP-ENV-ANN")
    b2b_invoice(conn, "FP-ENV-FICHE", einvoicing_address=f"{SIREN}_COMPTA")
    for platform in running_platform():
        env = Environment(
            dsn=db_dsn,
            home=tmp_path / "home",
            annuaire=config,
            plateforme=PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": platform.env_url()}),
        )
        run_treatment(env, "factures_preparer_envoi")
        # The directory is down at the send: the address of the preparation is used.
        directory.answer_next(503, times=8)

        report = run_treatment(env, "factures_envoyer")
        deposit_pending(env, by="jmartin")

        assert (state_of(conn, "FP-ENV-ANN"), state_of(conn, "FP-ENV-FICHE")) == ("ENVOYE",) * 2
        assert remark(report, "FP-ENV-ANN").endswith(f"{SIREN} : annuaire, consulté le {today()}")
        assert remark(report, "FP-ENV-FICHE").endswith(f"{SIREN}_COMPTA : fiche client")
        # What reached the PA is addressed where the report says.
        received = {flow.info["name"]: buyer_address(flow.data) for flow in platform.state.flows}
        assert received == {"FP-ENV-ANN.pdf": SIREN, "FP-ENV-FICHE.pdf": f"{SIREN}_COMPTA"}
        assert platform.state.violations == []
    directory.reset()
