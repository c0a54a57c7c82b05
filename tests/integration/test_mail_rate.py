"""The e-mail rate (setting COURRIELS_PAR_MINUTE) suits a real SMTP relay by default."""

from __future__ import annotations

import statistics
from itertools import pairwise

import psycopg
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)
from integration.test_mail import book, env, send  # noqa: F401 (fixtures)

from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_pending


def test_default_rate_is_ten_messages_a_second(
    env: Environment,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],  # noqa: F811
) -> None:
    waits: list[float] = []
    deliver_pending(env, send(env, "cadence-defaut"), sleep=waits.append)
    assert len(smtp_server.received) == 2
    (wait,) = waits
    assert 0.0 <= wait <= 0.1  # 600 a minute; 120 (0.5 s apart) made 10,000 customers 83 min


def test_zero_means_no_limit(
    env: Environment,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],  # noqa: F811
) -> None:
    with psycopg.connect(env.dsn) as conn:
        conn.execute("UPDATE settings SET value = '0' WHERE key = 'COURRIELS_PAR_MINUTE'")
    waits: list[float] = []
    deliver_pending(env, send(env, "sans-limite"), sleep=waits.append)
    assert len(smtp_server.received) == 2
    assert waits == []


def test_the_rate_spaces_the_handoffs_not_the_work_before_them(
    env: Environment,  # noqa: F811
    owner_dsn: str,
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],  # noqa: F811
) -> None:
    # 120 a minute, each message taking 0.3 s of work before it is handed over (its row marked
    # in a database or its attachments read across a network, here a slow trigger): the wait
    # added to that work put 0.8 s between two messages, 35 % fewer than the setting allows.
    with psycopg.connect(owner_dsn) as conn:
        for n in range(4):
            customer = insert_customer(conn, emails=[f"cadence{n}@example.fr"])
            insert_invoice(conn, customer, number=f"14087{n}", send_state="PRET")
        conn.execute("UPDATE settings SET value = '120' WHERE key = 'COURRIELS_PAR_MINUTE'")
        conn.execute(
            "CREATE FUNCTION slow_mark() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow_mark BEFORE UPDATE ON outbox FOR EACH ROW "
            "WHEN (NEW.status = 'en_cours') EXECUTE FUNCTION slow_mark()"
        )
    deliver_pending(env, send(env, "cadence-remise"))
    arrivals = [message.at for message in smtp_server.received]
    assert len(arrivals) == 6
    spacings = [b - a for a, b in pairwise(arrivals)]
    # 0.5 s apart (120 a minute), never much closer; the second waits the whole interval
    # after the first, whose work included first-time costs.
    assert statistics.median(spacings) <= 0.6
    assert min(spacings) >= 0.45
