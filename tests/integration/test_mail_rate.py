"""The e-mail rate (setting COURRIELS_PAR_MINUTE) suits a real SMTP relay by default."""

from __future__ import annotations

import statistics
import time
from email.message import EmailMessage
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)
from integration.test_mail import book, env, send  # noqa: F401 (fixtures)

from postier.delivery.mail import build_message
from postier.pipeline import mailing
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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 120 a minute, each message taking 0.3 s of work before it is handed over (its attachments
    # read across a network, here a slow build), but the third, quick: the wait added to that
    # work put 0.8 s between two messages, 35 % fewer than the setting allows; a wait shortened
    # by the work seen so far brought the quick one in 0.2 s after the previous one.
    with psycopg.connect(owner_dsn) as conn:
        for n in range(4):
            customer = insert_customer(conn, emails=[f"cadence{n}@example.fr"])
            insert_invoice(conn, customer, number=f"14087{n}", send_state="PRET")
        conn.execute("UPDATE settings SET value = '120' WHERE key = 'COURRIELS_PAR_MINUTE'")
    built = 0

    def slow_build(**kwargs: Any) -> EmailMessage:
        nonlocal built
        built += 1
        if built != 3:
            time.sleep(0.3)
        return build_message(**kwargs)

    monkeypatch.setattr(mailing, "build_message", slow_build)
    deliver_pending(env, send(env, "cadence-remise"))
    arrivals = [message.at for message in smtp_server.received]
    assert len(arrivals) == 6
    spacings = [b - a for a, b in pairwise(arrivals)]
    # 0.5 s apart (120 a minute), never closer.
    assert statistics.median(spacings) <= 0.6
    assert min(spacings) >= 0.45


class _Killed(Exception):
    """The task killed during the wait (Airflow's SIGTERM raises in the waiting task)."""


def test_a_task_killed_while_waiting_leaves_the_message_pending(
    env: Environment,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    book: dict[str, int],  # noqa: F811
) -> None:
    def killed(seconds: float) -> None:
        raise _Killed

    run_id = send(env, "tuee-en-attente")
    with pytest.raises(_Killed):
        deliver_pending(env, run_id, sleep=killed)
    assert len(smtp_server.received) == 1
    with psycopg.connect(env.dsn) as conn:
        statuses = conn.execute("SELECT status FROM outbox ORDER BY id").fetchall()
    assert statuses == [(mailing.SENT,), (mailing.PENDING,)]  # not `en_cours`, so not in doubt
    assert deliver_pending(env, sleep=lambda _: None)["envoyes"] == 1
    assert len({m.message["Message-ID"] for m in smtp_server.received}) == 2


def test_the_rate_holds_from_the_last_message_of_the_delivery_before(
    env: Environment,  # noqa: F811
    owner_dsn: str,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    # Two deliveries one right after the other (a retried chunk task, `rapport`, another host):
    # the second one's first message went out at once, 10 ms after the first one's last.
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("UPDATE settings SET value = '120' WHERE key = 'COURRIELS_PAR_MINUTE'")
    runs = []
    for n in range(2):
        with psycopg.connect(owner_dsn) as conn:
            customer = insert_customer(conn, emails=[f"suite{n}@example.fr"])
            insert_invoice(conn, customer, number=f"14089{n}", send_state="PRET")
        runs.append(send(env, f"cadence-suite-{n}"))
    first = deliver_pending(env, runs[0])
    second = deliver_pending(env, runs[1])
    assert (first["envoyes"], second["envoyes"]) == (1, 1)
    before, after = (message.at for message in smtp_server.received)
    assert after - before >= 0.45  # 0.5 s apart at 120 a minute, across the two deliveries
