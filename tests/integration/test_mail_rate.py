"""The e-mail rate (setting COURRIELS_PAR_MINUTE) suits a real SMTP relay by default."""

from __future__ import annotations

import psycopg
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
