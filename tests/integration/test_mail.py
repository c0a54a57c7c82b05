"""Customer e-mail after a send, against a real SMTP server (aiosmtpd) and a real PostgreSQL.

Send runs are driven through the pipeline functions (start, chunks, delivery, report), as the DAG
tasks do; messages are read back from the server and parsed with `email`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)

from postier.delivery.mail import SmtpConfig
from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_pending
from postier.pipeline.reports import write_report
from postier.pipeline.runs import process_chunk, start_run

PORTAL = "https://portail.artis.fr/artis/"


def environment(dsn: str, home: Path, smtp: SmtpConfig | None) -> Environment:
    return Environment(dsn=dsn, home=home, workers=1, smtp=smtp)


@pytest.fixture
def env(db_dsn: str, tmp_path: Path, smtp_server: SmtpServer) -> Environment:  # noqa: F811
    return environment(db_dsn, tmp_path / "home", SmtpConfig.from_url(smtp_server.url()))


def no_wait(seconds: float) -> None:
    return None


def send(env: Environment, external_id: str, split_chunks: int = 1) -> int:
    """A send run through its chunks (as `traiter_paquet` does); `split_chunks` spreads the
    selection round-robin over that many chunks, whatever the chunk size."""
    started = start_run(env, "factures_envoyer", {}, "mdupont", external_id)
    run_id = int(started["run_id"])
    chunks = started["chunks"]
    if split_chunks > 1:
        with psycopg.connect(env.dsn) as conn:
            conn.execute(
                "UPDATE run_items SET chunk = (position - 1) %% %s WHERE run_id = %s",
                (split_chunks, run_id),
            )
        chunks = list(range(split_chunks))
    for chunk in chunks:
        process_chunk(env, run_id, chunk)
    return run_id


def deliver(env: Environment, run_id: int | None = None) -> dict[str, int]:
    return deliver_pending(env, run_id, sleep=no_wait)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def pdf_attachments(message: EmailMessage) -> dict[str, bytes]:
    return {
        str(part.get_filename()): bytes(part.get_content()) for part in message.iter_attachments()
    }


@pytest.fixture
def book(db_dsn: str) -> Iterator[dict[str, int]]:
    """Two portal invoices for CÉLEU GROUPE, one for another portal customer, one paper, one
    Chorus: only the portal customers get a message."""
    with psycopg.connect(db_dsn) as conn:
        celeu = insert_customer(
            conn,
            code="000035",
            name="CÉLEU GROUPE",
            contact_name="Paul PAUSISSION",
            emails=["paul.pausission@celeu.fr"],
        )
        other = insert_customer(conn, code="000036", name="Crèmerie Loïc", emails=["loic@cr.fr"])
        ids = {
            "140863": insert_invoice(
                conn, celeu, number="140863", invoice_date=date(2026, 2, 2), send_state="PRET"
            ),
            "140864": insert_invoice(
                conn, celeu, number="140864", invoice_date=date(2026, 2, 3), send_state="PRET"
            ),
            "140865": insert_invoice(conn, other, number="140865", send_state="PRET"),
            "140866": insert_invoice(
                conn, insert_customer(conn, channel="papier"), number="140866", send_state="PRET"
            ),
            "140867": insert_invoice(
                conn, insert_customer(conn, channel="chorus"), number="140867", send_state="PRET"
            ),
        }
    yield ids


def test_message_follows_the_spec_template(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    run_id = send(env, "spec")
    summary = deliver(env, run_id)
    assert summary == {"composes": 2, "envoyes": 2, "en_echec": 0, "en_attente": 0}
    received = {r.rcpt_tos[0]: r for r in smtp_server.received}
    assert sorted(received) == ["loic@cr.fr", "paul.pausission@celeu.fr"]
    celeu = received["paul.pausission@celeu.fr"]
    assert celeu.mail_from == "contact@artis.fr"
    message = celeu.message
    assert message["From"] == "ARTIS <contact@artis.fr>"
    # As a mail client writes it: the contact's name, a date, a Message-ID of the sender's domain.
    assert message["To"] == "Paul PAUSISSION <paul.pausission@celeu.fr>"
    sent_at = message["Date"].datetime
    assert sent_at.tzinfo is not None
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 300
    assert message["Message-ID"].strip().endswith("@artis.fr>")
    assert message["Subject"] == "Mise à disposition de factures sur votre espace client"
    text = text_of(message)
    for line in (
        "Emetteur : ARTIS",
        "Destinataire : 000035 CÉLEU GROUPE",
        "Bonjour,",
        "La facture n° 140863 émise le 02/02/2026 est disponible sur votre espace client à "
        f"l'adresse suivante : {PORTAL}",
        "La facture n° 140864 émise le 03/02/2026 est disponible sur votre espace client à "
        f"l'adresse suivante : {PORTAL}",
        "Cordialement,",
        "E-mail : Service facturation <contact@artis.fr>",
        "Ce mail est généré par un serveur. Merci de ne pas y répondre.",
    ):
        assert line in text.splitlines(), line
    assert "140865" not in text  # another customer's invoice
    html = html_of(message)
    assert "CÉLEU GROUPE" in html and "La facture n° 140864 émise le 03/02/2026" in html
    assert f'<a href="{PORTAL}">' in html
    assert "&lt;contact@artis.fr&gt;" in html or "&lt;<a" in html
    assert pdf_attachments(message) == {}
    with psycopg.connect(env.dsn) as conn:
        outbox = conn.execute(
            "SELECT message_id, status, attempts, sent_by_run FROM outbox o "
            "JOIN customers c ON c.id = o.customer_id WHERE c.code = '000035'"
        ).fetchone()
        exchanges = conn.execute(
            "SELECT i.number, e.status, e.report FROM exchanges e "
            "JOIN invoices i ON i.id = e.invoice_id WHERE e.kind = 'mise_a_disposition' "
            "ORDER BY i.number"
        ).fetchall()
    assert outbox is not None
    assert message["Message-ID"].strip() == outbox[0]
    assert outbox[1:] == ("envoye", 1, run_id)
    assert [(n, s) for n, s, _ in exchanges] == [
        ("140863", "envoye"),
        ("140864", "envoye"),
        ("140865", "envoye"),
    ]
    assert exchanges[0][2]["courriel"] == outbox[0]
    assert exchanges[0][2]["destinataires"] == ["paul.pausission@celeu.fr"]
    report = write_report(env, run_id)
    written = json.loads(Path(report["rapport"]).with_suffix(".json").read_text())
    assert written["courriels"] | {"anomalies": []} == {
        "envoyes": 2,
        "remis_smtp": 2,
        "boite_locale": 0,
        "incertains": 0,
        "en_attente": 0,
        "en_erreur": 0,
        "rattrapes": 0,
        "anomalies": [],
    }
    markdown = Path(report["rapport"]).read_text()
    assert "## Courriels aux clients" in markdown
    assert "| Remis au serveur SMTP | Écrits dans la boîte d'envoi locale |" in markdown
    assert "| 2 | 0 | 0 | 0 | 0 | 0 |" in markdown


def test_attachment_is_the_archived_signed_pdf(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    with psycopg.connect(env.dsn) as conn:
        conn.execute("UPDATE settings SET value = 'true' WHERE key = 'COURRIEL_PIECE_JOINTE'")
    deliver(env, send(env, "pj"))
    celeu = next(m for m in smtp_server.messages() if "paul.pausission@celeu.fr" in m["To"])
    attached = pdf_attachments(celeu)
    assert sorted(attached) == ["Facture-140863.pdf", "Facture-140864.pdf"]
    with psycopg.connect(env.dsn) as conn:
        indexed = dict(
            conn.execute(
                "SELECT i.number, d.sha256 FROM documents d JOIN invoices i ON i.id = d.invoice_id"
            ).fetchall()
        )
    for name, data in attached.items():
        assert data.startswith(b"%PDF")
        assert hashlib.sha256(data).hexdigest() == indexed[name.removeprefix("Facture-")[:-4]]


def test_retry_and_rerun_do_not_resend_email(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    run_id = send(env, "retry")
    deliver(env, run_id)
    assert len(smtp_server.received) == 2
    # A retried delivery task, a retried chunk, a rerun of the same Airflow run, a new send run.
    assert deliver(env, run_id)["envoyes"] == 0
    process_chunk(env, run_id, 0)
    assert send(env, "retry") == run_id
    assert deliver(env, run_id) == {"composes": 0, "envoyes": 0, "en_echec": 0, "en_attente": 0}
    deliver(env, send(env, "rerun"))
    assert len(smtp_server.received) == 2


def test_one_message_per_customer_even_across_chunks(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    db_dsn: str,
) -> None:
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, emails=["compta@grossiste.fr", "dg@grossiste.fr"])
        for n in range(6):
            insert_invoice(conn, customer, number=f"G-{n}", send_state="PRET")
    run_id = send(env, "chunks", split_chunks=3)
    with psycopg.connect(db_dsn) as conn:
        chunks = conn.execute(
            "SELECT count(DISTINCT chunk) FROM run_items WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert chunks == (3,)
    deliver(env, run_id)
    (received,) = smtp_server.received
    assert sorted(received.rcpt_tos) == ["compta@grossiste.fr", "dg@grossiste.fr"]
    text = text_of(received.message)
    assert [line.split(" émise")[0] for line in text.splitlines() if "facture n°" in line] == [
        f"La facture n° G-{n}" for n in range(6)
    ]


def test_smtp_down_leaves_the_message_pending_and_the_next_run_sends_it_once(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
    db_dsn: str,
) -> None:
    smtp_server.stop()
    first = send(env, "down")
    summary = deliver(env, first)
    # The first failure stops the attempt: the second message would fail alike.
    assert summary == {"composes": 2, "envoyes": 0, "en_echec": 1, "en_attente": 2}
    with psycopg.connect(db_dsn) as conn:
        states = conn.execute("SELECT DISTINCT send_state FROM invoices").fetchall()
        pending = conn.execute(
            "SELECT status, attempts, last_error FROM outbox ORDER BY id"
        ).fetchall()
        exchange = conn.execute(
            "SELECT status, report FROM exchanges WHERE kind = 'mise_a_disposition' "
            "ORDER BY invoice_id LIMIT 1"
        ).fetchone()
    assert states == [("ENVOYE",)]  # the definitive send stands
    assert pending[0][:2] == ("a_envoyer", 1) and pending[1][:2] == ("a_envoyer", 0)
    assert "injoignable" in pending[0][2]
    assert exchange is not None and exchange[0] == "a_envoyer"
    assert "injoignable" in exchange[1]["erreur"]
    report = write_report(env, first)
    courriels = json.loads(Path(report["rapport"]).with_suffix(".json").read_text())["courriels"]
    assert (courriels["envoyes"], courriels["en_attente"]) == (0, 2)
    assert "injoignable" in courriels["anomalies"][0]["motif"]

    smtp_server.start()
    with psycopg.connect(db_dsn) as conn:
        insert_invoice(conn, number="140899", send_state="PRET")
    second = send(env, "up")
    assert deliver(env, second) == {"composes": 1, "envoyes": 3, "en_echec": 0, "en_attente": 0}
    assert deliver(env) == {"composes": 0, "envoyes": 0, "en_echec": 0, "en_attente": 0}
    ids = [m["Message-ID"].strip() for m in smtp_server.messages()]
    assert len(ids) == len(set(ids)) == 3
    write_report(env, second)
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT report FROM runs WHERE id = %s", (second,)).fetchone()
        errors = conn.execute(
            "SELECT count(*) FROM exchanges WHERE report ? 'erreur' OR status <> 'envoye' "
            "AND kind = 'mise_a_disposition'"
        ).fetchone()
    assert row is not None and row[0]["courriels"]["rattrapes"] == 2
    assert errors == (0,)


def test_definitive_refusal_is_reported_and_not_retried(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    smtp_server.refuse("loic@cr.fr")
    run_id = send(env, "refus")
    assert deliver(env, run_id) == {"composes": 2, "envoyes": 1, "en_echec": 1, "en_attente": 0}
    assert deliver(env, run_id)["en_echec"] == 0
    assert len(smtp_server.received) == 1
    write_report(env, run_id)
    with psycopg.connect(env.dsn) as conn:
        row = conn.execute("SELECT report FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    courriels = row[0]["courriels"]
    assert courriels["en_erreur"] == 1
    (anomaly,) = courriels["anomalies"]
    assert anomaly["client"] == "000036 Crèmerie Loïc" and anomaly["statut"] == "refusé"
    assert "loic@cr.fr (550)" in anomaly["motif"]


def test_rate_limit_spaces_messages(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    with psycopg.connect(env.dsn) as conn:
        conn.execute("UPDATE settings SET value = '30' WHERE key = 'COURRIELS_PAR_MINUTE'")
    waits: list[float] = []
    deliver_pending(env, send(env, "cadence"), sleep=waits.append)
    assert len(smtp_server.received) == 2
    (wait,) = waits
    assert 1.0 < wait <= 2.0  # 30 per minute: 2 s between two messages


def test_login_is_used_and_the_password_never_stored(
    db_dsn: str, tmp_path: Path, book: dict[str, int]
) -> None:
    server = SmtpServer(credentials=("postier", "s3cr3t-SMTP"))
    server.start()
    try:
        env = environment(db_dsn, tmp_path / "home", SmtpConfig.from_url(server.url()))
        assert "s3cr3t-SMTP" not in repr(env)
        run_id = send(env, "auth")
        assert deliver(env, run_id)["envoyes"] == 2
        write_report(env, run_id)
        bad = environment(
            db_dsn, tmp_path / "home", SmtpConfig.from_url(server.url().replace("s3cr3t", "x"))
        )
        with psycopg.connect(db_dsn) as conn:
            insert_invoice(conn, number="140900", send_state="PRET")
        assert deliver_pending(bad, send(bad, "auth-ko"), sleep=no_wait)["en_echec"] == 1
        write_report(bad, run_id + 1)
    finally:
        server.stop()
    assert len(server.received) == 2
    with psycopg.connect(db_dsn) as conn:
        dumped = conn.execute(
            "SELECT (SELECT json_agg(o)::text FROM outbox o) || "
            "(SELECT json_agg(e)::text FROM exchanges e) || "
            "(SELECT json_agg(r)::text FROM runs r)"
        ).fetchone()
    assert dumped is not None and "authentification refusée" in dumped[0]
    assert "s3cr3t" not in dumped[0]


def test_without_smtp_messages_are_written_to_the_outbox_folder(
    db_dsn: str, tmp_path: Path, book: dict[str, int]
) -> None:
    env = environment(db_dsn, tmp_path / "home", None)
    run_id = send(env, "eml")
    assert deliver(env, run_id)["envoyes"] == 2
    files = sorted((tmp_path / "home" / "outbox").glob("*.eml"))
    assert len(files) == 2
    parsed = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    with psycopg.connect(db_dsn) as conn:
        ids = {
            r[0]: r[1] for r in conn.execute("SELECT message_id, transport FROM outbox").fetchall()
        }
    assert {str(m["Message-ID"]).strip() for m in parsed} == set(ids)
    assert all(t == f"dossier {tmp_path / 'home' / 'outbox'}" for t in ids.values())
    celeu = next(m for m in parsed if "paul.pausission@celeu.fr" in m["To"])
    assert isinstance(celeu, EmailMessage)
    assert "Destinataire : 000035 CÉLEU GROUPE" in text_of(celeu)
    assert celeu["Date"] is not None and celeu["To"].startswith("Paul PAUSISSION <")
    assert deliver(env, run_id)["envoyes"] == 0
    assert len(list((tmp_path / "home" / "outbox").glob("*"))) == 2
    report = write_report(env, run_id)
    courriels = json.loads(Path(report["rapport"]).with_suffix(".json").read_text())["courriels"]
    # Written to a folder is not delivered: the report says which.
    assert (courriels["remis_smtp"], courriels["boite_locale"]) == (0, 2)


def test_concurrent_deliveries_send_each_message_once(
    env: Environment,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    run_id = send(env, "concurrent")
    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(lambda _: deliver(env, run_id), range(4)))
    assert sum(s["composes"] for s in summaries) == 2
    assert sum(s["envoyes"] for s in summaries) == 2
    assert len(smtp_server.received) == 2


def test_late_smtp_answer_makes_the_message_uncertain_never_resent_until_the_clerk_asks(
    db_dsn: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server stores each message, then answers after our 1 s timeout.
    smtp_server.handler.answer_delay = 2.5
    env = environment(db_dsn, tmp_path / "home", SmtpConfig.from_url(smtp_server.url(timeout="1")))
    run_id = send(env, "lent")
    summary = deliver(env, run_id)
    assert summary["envoyes"] == 0 and summary["en_attente"] == 1
    assert len(smtp_server.received) == 1  # the server did store it
    with psycopg.connect(db_dsn) as conn:
        (message_id, status, error), *_ = conn.execute(
            "SELECT message_id, status, last_error FROM outbox WHERE status <> 'a_envoyer'"
        ).fetchall()
    assert status == "incertain" and "n'a pas confirmé" in error

    # A rerun, with the server fast again, delivers the other one and never resends this one.
    smtp_server.handler.answer_delay = 0
    assert deliver(env)["envoyes"] == 1
    assert deliver(env)["envoyes"] == 0
    received = [m["Message-ID"].strip() for m in smtp_server.messages()]
    assert len(received) == 2 and received.count(message_id) == 1
    report = write_report(env, run_id)
    courriels = json.loads(Path(report["rapport"]).with_suffix(".json").read_text())["courriels"]
    assert courriels["incertains"] == 1 and courriels["remis_smtp"] == 1
    (anomaly,) = courriels["anomalies"]
    assert anomaly["statut"] == "incertain"
    assert f"postier courriels renvoyer {message_id}" in anomaly["motif"]

    # The clerk lists it, then re-sends it on purpose: same Message-ID, now delivered.
    from postier.cli import main

    monkeypatch.setenv("POSTIER_DB_DSN", db_dsn)
    monkeypatch.setenv("POSTIER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POSTIER_SMTP_URL", smtp_server.url())
    assert main(["courriels", "incertains"]) == 0
    assert main(["courriels", "renvoyer", message_id]) == 0
    received = [m["Message-ID"].strip() for m in smtp_server.messages()]
    assert received.count(message_id) == 2
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT status FROM outbox WHERE message_id = %s", (message_id,)
        ).fetchone() == ("envoye",)
