"""Fault injection on the definitive paths: a worker killed mid-chunk, PostgreSQL restarted
mid-chunk, an SMTP server slow or gone while a worker waits, the Chorus SFTP server down or
showing another host key, two sends at once.

After each fault, and the retry a clerk or Airflow would do, the books must balance: 0 invoices
lost, 0 stamped twice, 0 flows or e-mails doubled; an e-mail in doubt is reported, not resent.
The workers run as real processes (killed with SIGKILL), against the real servers.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from builders import insert_customer, insert_invoice, read_rows
from integration.smtp_server import SmtpServer, smtp_server  # noqa: F401 (fixture)
from integration.sshd import SshServer, sshd  # noqa: F401 (fixture)

from postier.delivery.chorus_sftp import SftpConfig
from postier.delivery.mail import SmtpConfig
from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_pending
from postier.pipeline.reports import finalize, write_report
from postier.pipeline.runs import process_chunk, start_run
from postier.store.cluster import LocalCluster, free_port
from postier.store.migrations import migrate

SEND, COLLECT = "factures_envoyer", "factures_chorus_recuperer"
VALID_SIRET = "73282932000074"

#: A worker process, as an Airflow task runs one chunk or the e-mail step.
WORKER = """
import sys
from pathlib import Path
from postier.delivery.mail import SmtpConfig
from postier.pipeline.context import Environment
from postier.pipeline.mailing import deliver_pending
from postier.pipeline.runs import process_chunk
dsn, home, what = sys.argv[1:4]
smtp = SmtpConfig.from_url(sys.argv[4]) if what == "mail" else None
env = Environment(dsn=dsn, home=Path(home), workers=1, smtp=smtp)
if what == "mail":
    deliver_pending(env, int(sys.argv[5]))
else:
    process_chunk(env, int(sys.argv[4]), int(sys.argv[5]))
"""


def worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def backends(dsn: str, condition: str = "true") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND application_name = 'postier' AND pid <> pg_backend_pid() AND {condition}"
        ).fetchone()
    return int(row[0]) if row else 0


def pause_once_on(owner_dsn: str, number: str, seconds: float) -> None:
    """The first time `number` is marked sent, its UPDATE sleeps: the chunk is then mid-way,
    some invoices of its transaction written, the others not."""
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("CREATE SEQUENCE fault_once")
        conn.execute(
            "CREATE FUNCTION fault_pause() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.number = '{number}' AND NEW.send_state = 'ENVOYE' "
            f"AND nextval('fault_once') = 1 THEN PERFORM pg_sleep({seconds}); END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fault_pause BEFORE UPDATE ON invoices "
            "FOR EACH ROW EXECUTE FUNCTION fault_pause()"
        )
        conn.execute("GRANT USAGE ON SEQUENCE fault_once TO postier_app")


def ready_book(dsn: str, invoices: int, prefix: str) -> list[int]:
    """`invoices` « Prêt » invoices over three portal customers (so, three e-mails)."""
    with psycopg.connect(dsn) as conn:
        customers = [insert_customer(conn) for _ in range(3)]
        return [
            insert_invoice(conn, customers[n % 3], number=f"{prefix}-{n:03d}", send_state="PRET")
            for n in range(invoices)
        ]


def assert_each_sent_once(dsn: str, ids: list[int]) -> None:
    """0 lost (all sent and stamped), 0 stamped twice (one exchange of each
    kind, one archived document per invoice)."""
    sent = read_rows(
        dsn,
        "SELECT count(*) FROM invoices WHERE id = ANY(%s) AND send_state = 'ENVOYE' "
        "AND sent_at IS NOT NULL",
        (ids,),
    )
    doubled = read_rows(
        dsn,
        "SELECT kind, invoice_id, count(*) FROM exchanges WHERE invoice_id = ANY(%s) "
        "GROUP BY kind, invoice_id HAVING count(*) > 1",
        (ids,),
    )
    ((documents, documented),) = read_rows(
        dsn,
        "SELECT count(*), count(DISTINCT invoice_id) FROM documents "
        "WHERE invoice_id = ANY(%s) AND kind = 'facture'",
        (ids,),
    )
    assert sent == [(len(ids),)]
    assert doubled == []
    assert documents == documented <= len(ids)


def send_run(env: Environment, external: str) -> tuple[int, list[int]]:
    started = start_run(env, SEND, {}, "mdupont", external)
    return int(started["run_id"]), list(started["chunks"])


# ------------------------------------------------------------------------------ SIGKILL


def test_worker_killed_mid_chunk_then_retried_sends_each_invoice_once(
    db_dsn: str, owner_dsn: str, tmp_path: Path
) -> None:
    ids = ready_book(db_dsn, 12, "KILL")
    pause_once_on(owner_dsn, "KILL-006", 3)
    env = Environment(dsn=db_dsn, home=tmp_path / "home", workers=1)
    run_id, chunks = send_run(env, "kill")
    proc = worker(db_dsn, str(env.home), "chunk", str(run_id), str(chunks[0]))
    try:
        wait_until(lambda: backends(db_dsn, "wait_event = 'PgSleep'") == 1, "the pause")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # PostgreSQL rolls the dead worker's transaction back once it notices the client is gone.
    wait_until(lambda: backends(db_dsn) == 0, "the dead worker's backend to end")
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM invoices WHERE send_state = 'ENVOYE'"
        ).fetchone() == (0,)
    for chunk in chunks:  # Airflow's retry of the task
        process_chunk(env, run_id, chunk)
    assert_each_sent_once(db_dsn, ids)
    assert deliver_pending(env, run_id, sleep=lambda _: None)["envoyes"] == 3
    assert len(list((env.home / "outbox").glob("*.eml"))) == 3


# -------------------------------------------------------------------- PostgreSQL restart


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own: restarting the session's would cut every other user."""
    base = Path(tempfile.mkdtemp(prefix="postier-fault-pg-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "pg")
    cluster.start()
    with psycopg.connect(cluster.owner_dsn()) as conn:
        migrate(conn)
    yield cluster
    cluster.stop()


def test_postgres_restart_mid_chunk_then_retried_sends_each_invoice_once(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    dsn = own_cluster.dsn()
    ids = ready_book(dsn, 12, "PGR")
    pause_once_on(own_cluster.owner_dsn(), "PGR-006", 30)
    env = Environment(dsn=dsn, home=tmp_path / "home", workers=1)
    run_id, chunks = send_run(env, "restart")
    proc = worker(dsn, str(env.home), "chunk", str(run_id), str(chunks[0]))
    wait_until(lambda: backends(dsn, "wait_event = 'PgSleep'") == 1, "the pause")
    # Fast shutdown then start, same port and options: the open transaction is lost.
    own_cluster._pg(
        "pg_ctl",
        "restart",
        "-D",
        str(own_cluster.data),
        "-m",
        "fast",
        "-w",
        "-l",
        str(own_cluster.log_file),
    )
    assert proc.wait(timeout=60) != 0  # the task fails…
    for chunk in chunks:  # …and Airflow retries it
        process_chunk(env, run_id, chunk)
    assert_each_sent_once(dsn, ids)


# ------------------------------------------------------------------------------- SMTP


def test_worker_killed_while_smtp_answers_late_leaves_the_email_in_doubt_never_resent(
    db_dsn: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    ids = ready_book(db_dsn, 6, "MAIL")
    env = Environment(dsn=db_dsn, home=tmp_path / "home", workers=1)
    run_id, chunks = send_run(env, "mail")
    for chunk in chunks:
        process_chunk(env, run_id, chunk)
    smtp_server.handler.answer_delay = 5
    proc = worker(db_dsn, str(env.home), "mail", smtp_server.url(timeout="30"), str(run_id))
    try:
        wait_until(lambda: len(smtp_server.received) == 1, "the server to store a message")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_until(lambda: backends(db_dsn) == 0, "the dead worker's backend to end")
    smtp_server.handler.answer_delay = 0
    smtp = SmtpConfig.from_url(smtp_server.url())
    again = dataclasses.replace(env, smtp=smtp)
    deliver_pending(again, sleep=lambda _: None)  # the rerun
    deliver_pending(again, sleep=lambda _: None)  # and another
    message_ids = [m["Message-ID"].strip() for m in smtp_server.messages()]
    assert len(message_ids) == len(set(message_ids)) == 3  # 0 e-mails doubled, 0 lost
    with psycopg.connect(db_dsn) as conn:
        statuses = sorted(r[0] for r in conn.execute("SELECT status FROM outbox"))
    assert statuses == ["envoye", "envoye", "incertain"]  # the one in doubt is reported
    report = write_report(env, run_id)
    assert "| 2 | 0 | 0 | 1 |" in Path(report["rapport"]).read_text()
    assert_each_sent_once(db_dsn, ids)


def test_smtp_down_then_up_delivers_each_email_once(
    db_dsn: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    ready_book(db_dsn, 6, "DOWN")
    env = Environment(
        dsn=db_dsn,
        home=tmp_path / "home",
        workers=1,
        smtp=SmtpConfig.from_url(smtp_server.url()),
    )
    run_id, chunks = send_run(env, "down")
    for chunk in chunks:
        process_chunk(env, run_id, chunk)
    smtp_server.stop()
    assert deliver_pending(env, run_id, sleep=lambda _: None)["envoyes"] == 0
    smtp_server.start()
    assert deliver_pending(env, sleep=lambda _: None)["envoyes"] == 3
    assert deliver_pending(env, sleep=lambda _: None)["envoyes"] == 0
    assert len({m["Message-ID"] for m in smtp_server.messages()}) == len(smtp_server.received) == 3


# ------------------------------------------------------------------------------- SFTP


def collect(env: Environment, external: str) -> dict[str, object]:
    started = start_run(env, COLLECT, {}, "jmartin", external)
    for chunk in started["chunks"]:
        process_chunk(env, external, chunk)
    write_report(env, external, finalize(env, external))
    with env.connect() as conn:
        row = conn.execute("SELECT report FROM runs WHERE external_id = %s", (external,)).fetchone()
    assert row is not None
    return dict(row[0])


@pytest.mark.parametrize("fault", ["server down", "host key changed"])
def test_chorus_sftp_fault_deposits_nothing_then_one_flow_once_fixed(
    db_dsn: str,
    tmp_path: Path,
    sshd: SshServer,  # noqa: F811
    fault: str,
) -> None:
    folder = sshd.folder()
    good = sshd.config(folder)
    if fault == "server down":
        bad = dataclasses.replace(good, port=free_port())
    else:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
        )
        other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
        bad = dataclasses.replace(good, host_key=other)
    with psycopg.connect(db_dsn) as conn:
        customer = insert_customer(conn, channel="chorus", siret=VALID_SIRET)
        ids = [
            insert_invoice(conn, customer, number=f"SFTP-{n}", send_state="ENVOYE")
            for n in range(3)
        ]
    env = Environment(dsn=db_dsn, home=tmp_path / "home", workers=1, chorus_sftp=bad)
    try:
        collect(env, f"{COLLECT}/fault")
    except Exception:  # noqa: BLE001 (a failed task is one acceptable outcome of the fault)
        pass
    assert not (folder / "in").exists() or list((folder / "in").iterdir()) == []
    fixed: SftpConfig = good
    collect(dataclasses.replace(env, chorus_sftp=fixed), f"{COLLECT}/fixed")
    collect(dataclasses.replace(env, chorus_sftp=fixed), f"{COLLECT}/again")
    flows = sorted(p.name for p in (folder / "in").iterdir())
    with psycopg.connect(db_dsn) as conn:
        recorded = [r[0] for r in conn.execute("SELECT name FROM chorus_flows ORDER BY name")]
        deposited = conn.execute(
            "SELECT count(*) FROM invoices WHERE id = ANY(%s) AND chorus_deposited_at IS NOT NULL",
            (ids,),
        ).fetchone()
        exported = conn.execute(
            "SELECT count(*), count(DISTINCT invoice_id) FROM exchanges "
            "WHERE kind = 'export_chorus' AND invoice_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert flows == recorded and len(flows) == 1  # 0 flows doubled, none lost
    assert deposited == (3,) and exported == (3, 3)


# ------------------------------------------------------------------- two sends at once


def test_two_concurrent_sends_send_each_invoice_and_email_once(
    db_dsn: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    ids = ready_book(db_dsn, 24, "CONC")
    env = Environment(
        dsn=db_dsn,
        home=tmp_path / "home",
        workers=2,
        smtp=SmtpConfig.from_url(smtp_server.url()),
    )
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def one_send(name: str) -> None:
        try:
            barrier.wait()
            run_id, chunks = send_run(env, name)
            for chunk in chunks:
                process_chunk(env, run_id, chunk)
            deliver_pending(env, run_id, sleep=lambda _: None)
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=one_send, args=(n,)) for n in ("envoi-a", "envoi-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    deliver_pending(env, sleep=lambda _: None)  # whichever run finished first left none behind
    assert_each_sent_once(db_dsn, ids)
    announced = [
        line
        for m in smtp_server.messages()
        for line in str(m.get_body(("plain",)).get_content()).splitlines()  # type: ignore[union-attr]
        if line.startswith("La facture n°")
    ]
    assert len(announced) == len(set(announced)) == 24  # each invoice announced exactly once
