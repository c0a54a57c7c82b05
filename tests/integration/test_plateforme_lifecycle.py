"""Lifecycle statuses (CDAR D22B, 200–214) applied from files with `postier plateforme importer`;
every file is built by `cdar_files`, which validates it against the official CDAR schema."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from builders import insert_deposited_invoice, lifecycle_of
from cdar_files import cdar, cdar_many

from postier.cli import main

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=PARIS)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_statuses_200_to_212_are_applied_in_order_and_212_records_the_payment(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    insert_deposited_invoice(conn, "FP-LC-1")
    codes = ["200", "202", "203", "204", "205", "211", "212"]
    files = [
        write(tmp_path, f"{i}.xml", cdar("FP-LC-1", code, T0 + timedelta(hours=i)))
        for i, code in enumerate(codes)
    ]

    assert main(["plateforme", "importer", *map(str, files)]) == 0
    assert main(["plateforme", "importer", *map(str, files)]) == 0  # replayed: nothing twice

    logged, (status, _, paid_at) = lifecycle_of(conn, "FP-LC-1")
    assert logged == codes
    assert status == "212" and paid_at == T0 + timedelta(hours=6)


def test_an_older_status_arriving_late_never_overwrites_a_newer_one(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    insert_deposited_invoice(conn, "FP-LC-2")
    newer = write(tmp_path, "a.xml", cdar("FP-LC-2", "205", T0 + timedelta(days=1)))
    older = write(tmp_path, "b.xml", cdar("FP-LC-2", "204", T0))

    assert main(["plateforme", "importer", str(newer), str(older)]) == 0

    logged, (status, _, _) = lifecycle_of(conn, "FP-LC-2")
    assert logged == ["205", "204"] and status == "205"


def test_hostile_invalid_or_unknown_files_are_set_aside_while_the_others_apply(
    postier_env: str,
    conn: psycopg.Connection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    insert_deposited_invoice(conn, "FP-LC-3")
    good = write(tmp_path, "bon.xml", cdar("FP-LC-3", "210", T0, "montant contesté"))
    unknown = write(tmp_path, "inconnue.xml", cdar("FA-JAMAIS", "200", T0))
    bomb = write(
        tmp_path,
        "bombe.xml",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r>&b;</r>',
    )
    invalid = write(tmp_path, "invalide.xml", cdar("FP-LC-3", "299", T0))
    not_cdar = write(
        tmp_path,
        "schema.xml",
        cdar("FP-LC-3", "200", T0).replace(b"ram:IssuerAssignedID", b"ram:Inconnu"),
    )

    code = main(["plateforme", "importer", *map(str, [unknown, bomb, invalid, not_cdar, good])])

    assert code == 1
    logged, (status, reason, _) = lifecycle_of(conn, "FP-LC-3")
    assert logged == ["210"] and status == "210" and reason == "montant contesté"
    out = capsys.readouterr().out
    assert "À traiter : FP-LC-3 : 210 Refusée : montant contesté" in out
    assert "inconnue.xml — statut 200 Déposée pour la facture FA-JAMAIS, inconnue" in out
    assert "bombe.xml — XML refusé : déclaration DOCTYPE/ENTITY interdite" in out
    assert "invalide.xml — facture FP-LC-3 : statut de cycle de vie « 299 » inconnu" in out
    assert "schema.xml — fichier non conforme au schéma officiel CDAR D22B" in out
    set_aside = conn.execute(
        "SELECT report->>'fichier' FROM exchanges WHERE status = 'quarantaine' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in set_aside] == [
        "inconnue.xml",
        "bombe.xml",
        "invalide.xml",
        "schema.xml",
    ]


def test_paid_at_is_the_newest_212_even_behind_a_newer_status_and_never_an_older_one(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    insert_deposited_invoice(conn, "FP-LC-7")
    visa = write(tmp_path, "214.xml", cdar("FP-LC-7", "214", T0 + timedelta(hours=3)))
    paid = write(tmp_path, "212.xml", cdar("FP-LC-7", "212", T0 + timedelta(hours=1)))
    older = write(tmp_path, "212-old.xml", cdar("FP-LC-7", "212", T0))

    assert main(["plateforme", "importer", str(visa), str(paid)]) == 0
    # A 212 older than the status held still records the payment, without becoming current.
    _, (status, _, paid_at) = lifecycle_of(conn, "FP-LC-7")
    assert status == "214" and paid_at == T0 + timedelta(hours=1)

    assert main(["plateforme", "importer", str(older)]) == 0

    logged, (status, _, paid_at) = lifecycle_of(conn, "FP-LC-7")
    assert logged == ["214", "212", "212"]
    assert status == "214" and paid_at == T0 + timedelta(hours=1)


def test_one_file_of_many_statuses_applies_each_once_and_sets_aside_only_the_unknown_one(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    insert_deposited_invoice(conn, "FP-LC-8")
    insert_deposited_invoice(conn, "FP-LC-9")
    at = [T0 + timedelta(minutes=i) for i in range(4)]
    data = cdar_many(
        ("FP-LC-8", "200", at[0]),
        ("FP-LC-9", "200", at[0]),
        ("FP-LC-8", "205", at[2]),
        ("FP-LC-8", "204", at[1]),  # older than 205, later in the file
        ("FA-JAMAIS", "200", at[0]),
        ("FP-LC-9", "212", at[3]),
        ("FP-LC-9", "212", at[3]),  # the same status twice in one file
    )
    many = write(tmp_path, "lot.xml", data)

    assert main(["plateforme", "importer", str(many)]) == 1
    assert main(["plateforme", "importer", str(many)]) == 1  # replayed: nothing applied twice

    assert lifecycle_of(conn, "FP-LC-8") == (["200", "205", "204"], ("205", None, None))
    assert lifecycle_of(conn, "FP-LC-9") == (["200", "212"], ("212", None, at[3]))
    set_aside = conn.execute(
        "SELECT report->>'motif' FROM exchanges WHERE status = 'quarantaine'"
    ).fetchall()
    assert [r[0][:40] for r in set_aside] == ["statut 200 Déposée pour la facture FA-JA"] * 2


def test_polling_pages_through_flows_sharing_a_time_across_the_page_limit_without_losing_one(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    from postier.delivery.local_pa import running_platform
    from postier.delivery.plateforme import SEARCH_LIMIT, FlowClient, PlatformConfig
    from postier.pipeline.context import Environment
    from postier.pipeline.lifecycle_flows import poll, watermark

    insert_deposited_invoice(conn, "FP-LC-10")
    # 98 flows at t1, 5 at t2 (the first page ends in the middle of them), 2 at t3.
    t1 = datetime.now(PARIS).replace(microsecond=0) - timedelta(hours=3)
    times = (
        [t1] * (SEARCH_LIMIT - 2) + [t1 + timedelta(hours=1)] * 5 + [t1 + timedelta(hours=2)] * 2
    )
    for pa in running_platform():
        ids = [
            pa.add_lifecycle_flow(
                cdar("FP-LC-10", "204", T0 + timedelta(minutes=i)), updated_at=updated
            )
            for i, updated in enumerate(times)
        ]
        state = pa.state
        config = PlatformConfig(pa.base_url, pa.token_url, state.client_id, state.client_secret)
        with FlowClient(config) as client:
            env = Environment(dsn=postier_env, home=tmp_path / "home")
            summary = poll(env, client, actor="test")
            again = poll(env, client, actor="test")
        assert state.violations == []

    assert summary["compteurs"]["flux"] == len(ids) and again["compteurs"]["flux"] == 0
    recorded = {r[0] for r in conn.execute("SELECT flow_id FROM plateforme_lifecycle_flows")}
    assert recorded == set(ids)
    assert len(lifecycle_of(conn, "FP-LC-10")[0]) == len(ids)
    assert watermark(conn) == times[-1]


def test_a_lifecycle_file_past_the_size_limit_is_set_aside_without_being_read_whole(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    from postier.delivery.local_pa import running_platform
    from postier.delivery.plateforme import FlowClient, PlatformConfig
    from postier.domain.limits import MAX_FILE_SIZE
    from postier.pipeline.context import Environment
    from postier.pipeline.lifecycle_flows import poll

    insert_deposited_invoice(conn, "FP-LC-12")
    earlier = datetime.now(PARIS).replace(microsecond=0) - timedelta(hours=2)
    for pa in running_platform():
        huge = pa.add_lifecycle_flow(b"", generated=16 * MAX_FILE_SIZE, updated_at=earlier)
        pa.add_lifecycle_flow(cdar("FP-LC-12", "200", T0), updated_at=earlier + timedelta(hours=1))
        state = pa.state
        config = PlatformConfig(pa.base_url, pa.token_url, state.client_id, state.client_secret)
        with FlowClient(config) as client:
            summary = poll(Environment(dsn=postier_env, home=tmp_path / "home"), client)
        for _ in range(100):  # the server notices the closed connection on its next write
            if huge in state.sent:
                break
            time.sleep(0.1)
        sent = state.sent[huge]

    assert summary["compteurs"]["flux"] == 2 and summary["compteurs"]["quarantaine"] == 1
    assert sent < 4 * MAX_FILE_SIZE  # stopped near the limit, not after 16 times it
    ((status, reason),) = conn.execute(
        "SELECT status, reason FROM plateforme_lifecycle_flows WHERE flow_id = %s", (huge,)
    ).fetchall()
    assert status == "quarantaine"
    assert f"fichier de plus de {MAX_FILE_SIZE} octets, lecture arrêtée" in reason
    assert lifecycle_of(conn, "FP-LC-12")[0] == ["200"]


def test_a_flow_the_pa_dates_in_the_future_does_not_hide_the_flows_after_it(
    postier_env: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    from postier.delivery.local_pa import running_platform
    from postier.delivery.plateforme import FlowClient, PlatformConfig
    from postier.pipeline.context import Environment
    from postier.pipeline.lifecycle_flows import poll, watermark

    insert_deposited_invoice(conn, "FP-LC-13")
    an_hour_ago = datetime.now(PARIS).replace(microsecond=0) - timedelta(hours=1)
    env = Environment(dsn=postier_env, home=tmp_path / "home")
    for pa in running_platform():
        pa.add_lifecycle_flow(cdar("FP-LC-13", "200", T0), updated_at=an_hour_ago)
        pa.add_lifecycle_flow(
            cdar("FP-LC-13", "202", T0 + timedelta(hours=1)),
            updated_at=datetime.now(PARIS) + timedelta(days=3650),
        )
        state = pa.state
        config = PlatformConfig(pa.base_url, pa.token_url, state.client_id, state.client_secret)
        with FlowClient(config) as client:
            first = poll(env, client)
            mark = watermark(conn)
            # A status the buyer sends after that run, dated by the PA's (right) clock.
            pa.add_lifecycle_flow(cdar("FP-LC-13", "203", T0 + timedelta(hours=2)))
            second = poll(env, client)
        assert state.violations == []

    assert first["compteurs"]["flux"] == 2 and second["compteurs"]["flux"] == 1
    assert mark == an_hour_ago
    assert watermark(conn) <= datetime.now(PARIS)  # type: ignore[operator]
    assert lifecycle_of(conn, "FP-LC-13")[0] == ["200", "202", "203"]
