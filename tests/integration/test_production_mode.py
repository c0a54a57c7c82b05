"""`POSTIER_ENV=production` refuses the demo stand-ins (signing key, local GED, local outbox)
instead of falling back to them silently; real services (PostgreSQL, aiosmtpd) throughout."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)

from postier.delivery.mail import SmtpConfig
from postier.documents.samples import SampleIdentity, sample_identity
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_pending
from postier.pipeline.runs import process_chunk, start_run


@pytest.fixture(scope="module")
def identity() -> SampleIdentity:
    return sample_identity(b"phrase-secrete", common_name="ARTIS facturation")


@pytest.fixture
def ready(db_dsn: str) -> int:
    """One portal invoice « Prêt » to send."""
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, code="000035", emails=["paul@celeu.fr"])
        return insert_invoice(conn, customer, number="140863", send_state="PRET")


def production(db_dsn: str, home: Path, **services: object) -> Environment:
    return Environment(dsn=db_dsn, home=home, workers=1, production=True, **services)


def state(db_dsn: str, invoice_id: int) -> str:
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT send_state FROM invoices WHERE id = %s", (invoice_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def refused_send(env: Environment) -> str:
    with pytest.raises(ConfigurationError) as refused:
        start_run(env, "factures_envoyer", {}, "mdupont", "prod")
    with psycopg.connect(env.dsn) as conn:
        # Recorded as failed with its reason (it shows in the reports), nothing selected.
        assert conn.execute("SELECT status, report->>'motif' FROM runs").fetchall() == [
            ("en_erreur", str(refused.value))
        ]
        assert conn.execute("SELECT count(*) FROM run_items").fetchone() == (0,)
    return str(refused.value)


@pytest.mark.parametrize(
    ("stand_in", "says", "not_says"),
    [
        ("signing", ["clé de signature de démonstration", "postier_signing"], []),
        ("ged", ["GED locale", "postier_ged"], ["signature"]),
        ("smtp", ["boîte d'envoi locale", "postier_smtp"], []),
    ],
    ids=["signing_key", "local_ged", "local_outbox"],
)
def test_send_refuses_a_demo_stand_in(
    db_dsn: str,
    tmp_path: Path,
    ready: int,
    identity: SampleIdentity,
    smtp_server: SmtpServer,  # noqa: F811
    stand_in: str,
    says: list[str],
    not_says: list[str],
) -> None:
    """Every real service configured but one: the send names the demo stand-in it refuses."""
    services: dict[str, dict[str, object]] = {
        "signing": {"signing_pkcs12": identity.pkcs12, "signing_passphrase": identity.passphrase},
        "ged": {"ged_url": str(tmp_path / "ged")},
        "smtp": {"smtp": SmtpConfig.from_url(smtp_server.url())},
    }
    del services[stand_in]
    env = production(
        db_dsn, tmp_path / "home", **{k: v for s in services.values() for k, v in s.items()}
    )
    message = refused_send(env)
    assert all(part in message for part in says), message
    assert not any(part in message for part in not_says), message
    assert state(db_dsn, ready) == "PRET"
    assert not (tmp_path / "home" / "signing").exists()  # no demo key made either


def test_send_with_real_services_goes_through(
    db_dsn: str,
    tmp_path: Path,
    ready: int,
    identity: SampleIdentity,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    env = production(
        db_dsn,
        tmp_path / "home",
        signing_pkcs12=identity.pkcs12,
        signing_passphrase=identity.passphrase,
        ged_url=str(tmp_path / "ged"),
        smtp=SmtpConfig.from_url(smtp_server.url()),
    )
    started = start_run(env, "factures_envoyer", {}, "mdupont", "prod")
    for chunk in started["chunks"]:
        process_chunk(env, started["run_id"], chunk)
    deliver_pending(env, started["run_id"], sleep=lambda _: None)
    assert state(db_dsn, ready) == "ENVOYE"
    assert list((tmp_path / "ged").rglob("*.pdf"))
    assert len(smtp_server.received) == 1
    assert not (tmp_path / "home" / "outbox").exists()
    assert not (tmp_path / "home" / "ged").exists()


def test_pending_mail_is_not_written_to_the_local_outbox(
    db_dsn: str, tmp_path: Path, ready: int
) -> None:
    home = tmp_path / "home"
    development = Environment(dsn=db_dsn, home=home, workers=1, production=False)
    started = start_run(development, "factures_envoyer", {}, "mdupont", "dev")
    for chunk in started["chunks"]:
        process_chunk(development, started["run_id"], chunk)
    with pytest.raises(ConfigurationError, match="boîte d'envoi locale"):
        deliver_pending(production(db_dsn, home, ged_url=str(home / "ged")), started["run_id"])
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT status FROM outbox").fetchall() == [("a_envoyer",)]
    assert not (home / "outbox").exists()


def test_send_without_archiving_needs_no_ged(
    db_dsn: str, tmp_path: Path, identity: SampleIdentity
) -> None:
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "UPDATE settings SET value = 'false' WHERE key IN ('ARCHIVAGE_FACTURES', 'DEMAT_ARTIS')"
        )
        paper = insert_invoice(
            conn, insert_customer(conn, channel="papier"), number="140870", send_state="PRET"
        )
    env = production(
        db_dsn,
        tmp_path / "home",
        signing_pkcs12=identity.pkcs12,
        signing_passphrase=identity.passphrase,
    )
    started = start_run(env, "factures_envoyer", {}, "mdupont", "papier")
    for chunk in started["chunks"]:
        process_chunk(env, started["run_id"], chunk)
    assert state(db_dsn, paper) == "ENVOYE"
    assert not (tmp_path / "home" / "ged").exists()
