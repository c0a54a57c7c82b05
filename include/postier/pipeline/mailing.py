"""Customer e-mails after a send: one message per (run, customer), delivered exactly once.

The send chunk only records, in its own transaction, what must be mailed: an exchange row
`mise_a_disposition` / `a_envoyer` per portal invoice. E-mail is never a reason to roll back a
definitive send, so nothing here runs inside a chunk. After the chunks:

1. compose — the exchange rows not yet in a message are grouped by (run, customer) into one
   `outbox` row with its rendered text and a fresh Message-ID, committed before any attempt. Each
   exchange row joins at most one message (`outbox_items.exchange_id` is UNIQUE), and composers
   queue on an advisory lock, so a retry, a rerun or a concurrent run never makes a second message
   for the same invoice.
2. deliver — each pending message is taken under its row lock (`FOR UPDATE SKIP LOCKED`),
   marked `en_cours` and committed, then handed to the server, then marked `envoye` with its
   exchange rows. A retry finds it sent; a concurrent deliverer skips it. An SMTP failure before
   the end of the message reached the server commits the (French) error and leaves it
   `a_envoyer` for the next send run; a definitive refusal (5xx) marks it `en_erreur`.

At most once, never silently: when the whole message reached the server but its answer did not
come back (timeout, connection lost), or the task died while it was `en_cours`, the server may
have stored it. It is then `incertain`: reported, never sent again automatically (a rerun never
e-mails twice); the clerk checks with the customer and re-sends it on purpose with
`postier courriels renvoyer <Message-ID>`. The `.eml` outbox has no such doubt: the file is named
by the Message-ID and is replaced, not duplicated, so an interrupted write is simply redone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from itertools import groupby
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from postier import env_settings
from postier.delivery.archive import DocumentArchive
from postier.delivery.mail import (
    SMTP_TRANSPORT,
    Attachment,
    MailDeliveryError,
    Mailer,
    MailOutcomeUnknown,
    Notice,
    NoticeContent,
    build_message,
    mailer_for,
    new_message_id,
    render_notice,
)
from postier.errors import DeliveryError
from postier.pipeline.context import Environment
from postier.pipeline.runs import RunRef, resolve_run_id
from postier.store.database import connect
from postier.store.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Advisory lock shared by every delivery step: one composer and one sender at a time, so that
#: COURRIELS_PAR_MINUTE holds across concurrent runs.
_MAIL_LOCK = 4_242_005

#: Another run's notices are grouped only once that run is over (its own delivery step may still
#: be coming), or when it was abandoned long ago.
_ABANDONED_AFTER = "1 day"

PENDING, SENT, FAILED = "a_envoyer", "envoye", "en_erreur"
SENDING, UNCERTAIN = "en_cours", "incertain"

UNCERTAIN_HINT = (
    "issue inconnue, non renvoyé automatiquement ; après vérification auprès du client, "
    "renvoyez-le avec « postier courriels renvoyer {message_id} »"
)


@dataclass(frozen=True)
class _Row:
    exchange_id: int
    run_id: int
    customer_id: int
    customer_code: str
    customer_name: str
    contact_name: str | None
    emails: list[str]
    invoice_id: int
    number: str
    kind: str
    invoice_date: date


def deliver_send(env: Environment, run_ref: RunRef) -> dict[str, dict[str, int]]:
    """A send's deliveries once its chunks are over: the customer e-mails (`deliver_pending`),
    then the Plateforme Agréée deposits (`deposit_for_run`), of this run and of earlier ones.

    Only what is still pending: run again, it repeats nothing. An SMTP failure leaves the
    messages pending, a PA that is down leaves the invoices pending for the next send: neither
    raises. A PA configuration to fix raises its `ConfigurationError` (French message), after
    the e-mails were delivered."""
    from postier.pipeline.plateforme import deposit_for_run

    mails = deliver_pending(env, run_ref)
    return {"courriels": mails, "plateforme": deposit_for_run(env, run_ref)}


#: The second half of the two-int4 advisory key of a run's delivery (`delivery_claim`), next to
#: its start's (`postier.pipeline.runs.START_LOCK`).
DELIVERY_LOCK = -2

#: What the task that ends a send logs of its deliveries, read by `bench/airflow_bench.py` (a
#: serial step's work, done in a chunk task).
DELIVERY_LOG = "Livraison de l'envoi (courriels, plateforme agréée) en %.2f s"


class DeliveryLockTimeout(DeliveryError):
    """The run's delivery lock still held after its wait (`POSTIER_DELIVERY_LOCK_WAIT_SECONDS`,
    `env_settings.delivery_lock_wait`): the task fails, and is retried."""


def end_send(env: Environment, run_ref: RunRef, deliverer: int, parts: int) -> bool:
    """The end of a send's work in a task that leaves nothing of it to process: whether this
    task ends it (it then writes the run's report), having delivered what the run left pending
    (`deliver_send`: only what is pending, and a PA with nothing pending is not called).

    ONE task ends it: the run's deliverer (`delivery_claim`: the first task to hold the run's
    delivery lock marks itself in the run's row, by its `deliverer` number, the chunk task's map
    index, one of `parts`). Any other ends at once — without holding a worker slot, a connection
    or a transaction for the delivery's minutes. The mark outlives the deliverer's attempts: a
    delivery that fails (a PA refusing Postier's credentials: `ConfigurationError`, French
    message) is done again by the deliverer's retries, and by a « Clear » of the run once fixed;
    failed for good, `rapport` delivers."""
    with delivery_claim(env, run_ref, deliverer, parts) as claimed:
        if not claimed:
            return False
        started = time.perf_counter()
        deliver_send(env, run_ref)
        log.info(DELIVERY_LOG, time.perf_counter() - started)
    return True


@contextmanager
def delivery_claim(env: Environment, run_ref: RunRef, deliverer: int, parts: int) -> Iterator[bool]:
    """Whether `deliverer` (of `parts` chunk tasks; -1: the confirmation) delivers the run
    `run_ref`: True, holding the run's delivery lock while the `with` lasts, when it is the
    run's deliverer (marked in the run's row by the first to hold the lock; a mark naming a task
    the run no longer has, its index ≥ `parts`, is taken over by the next to hold it); False at
    once when another is the run's deliverer, or holds the lock.

    The deliverer's retry while its earlier attempt still holds the lock (cut off, on a host that
    died: its PostgreSQL backend lingers until TCP keepalive) waits for it, at most
    `POSTIER_DELIVERY_LOCK_WAIT_SECONDS` (`DeliveryLockTimeout` then, French message: Airflow
    retries it; a bad value of the setting is a French `ConfigurationError` before anything).

    A session advisory lock on a connection of its own, autocommit: no transaction stays open
    while delivering (minutes at the e-mail rate limit), and a task that dies loses it with its
    connection; its mark stays, for its retry."""
    key = (str(run_ref), DELIVERY_LOCK)
    wait = env_settings.delivery_lock_wait()
    with connect(env.dsn, autocommit=True) as conn:
        run_id = resolve_run_id(conn, run_ref)
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", key).fetchone()
        if not (row and row[0]):
            mark = conn.execute("SELECT deliverer FROM runs WHERE id = %s", (run_id,)).fetchone()
            if not (mark and mark[0] == deliverer):
                yield False
                return
            _wait_for_delivery_lock(conn, key, wait)
        try:
            marked = conn.execute(
                "UPDATE runs SET deliverer = CASE WHEN deliverer IS NULL OR deliverer >= %s "
                "THEN %s ELSE deliverer END WHERE id = %s RETURNING deliverer",
                (parts, deliverer, run_id),
            ).fetchone()
            yield marked is not None and marked[0] == deliverer
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", key)


@contextmanager
def delivery_lock(env: Environment, run_ref: RunRef) -> Iterator[None]:
    """The run's delivery lock, held while the `with` lasts, waited for at most
    `POSTIER_DELIVERY_LOCK_WAIT_SECONDS` (`DeliveryLockTimeout`): for `rapport`, which delivers
    after its wait for the chunk tasks, next to one that may still be delivering."""
    key = (str(run_ref), DELIVERY_LOCK)
    wait = env_settings.delivery_lock_wait()
    with connect(env.dsn, autocommit=True) as conn:
        _wait_for_delivery_lock(conn, key, wait)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", key)


def _wait_for_delivery_lock(conn: psycopg.Connection, key: tuple[str, int], wait: float) -> None:
    # PostgreSQL's lock_timeout: whole milliseconds, at most 2^31 - 1 (0 would wait forever).
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false)",
        (f"{min(max(1, int(wait * 1000)), 2**31 - 1)}ms",),
    )
    try:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", key)
    except psycopg.errors.LockNotAvailable:
        raise DeliveryLockTimeout(
            f"livraison de l'envoi toujours tenue par une autre tâche après "
            f"{wait:g} s (tâche bloquée ou hôte injoignable) : rien n'est "
            "perdu, la tâche sera relancée"
        ) from None
    finally:
        conn.execute("RESET lock_timeout")


def deliver_pending(
    env: Environment, run_ref: RunRef | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, int]:
    """Compose the messages of `run_ref` (and of finished runs), then deliver every pending one.

    Small summary for XCom: messages composed now, sent now, failed now, still pending.
    """
    with connect(env.dsn, autocommit=True) as conn:
        run_id = resolve_run_id(conn, run_ref) if run_ref is not None else None
        conn.execute("SELECT pg_advisory_lock(%s)", (_MAIL_LOCK,))
        try:
            settings = load_settings(conn)
            composed = compose_messages(conn, env, settings, run_id)
            sent, failed = _deliver(conn, env, settings, run_id, sleep)
            pending_row = conn.execute(
                "SELECT count(*) FROM outbox WHERE status = %s", (PENDING,)
            ).fetchone()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MAIL_LOCK,))
    summary = {
        "composes": composed,
        "envoyes": sent,
        "en_echec": failed,
        "en_attente": int(pending_row[0]) if pending_row else 0,
    }
    log.info(
        "Courriels : %(composes)d composé(s), %(envoyes)d envoyé(s), %(en_echec)d en échec, "
        "%(en_attente)d en attente",
        summary,
    )
    return summary


def compose_messages(
    conn: psycopg.Connection, env: Environment, settings: Settings, run_id: int | None
) -> int:
    """Group the notices not yet in a message into one message per (run, customer)."""
    composed = 0
    # A server-side cursor, read one customer's notices at a time: a send's notices are as many
    # as its invoices, loaded whole they stacked on the chunk task's memory (it delivers after
    # its chunks). Its snapshot is its opening's: the messages composed meanwhile do not change it.
    with conn.transaction(), conn.cursor(name="notices_to_compose") as cur:
        cur.execute(
            "SELECT e.id, e.run_id, c.id, c.code, c.name, c.contact_name, c.emails, i.id, "
            "i.number, i.kind, "
            "i.invoice_date FROM exchanges e "
            "JOIN runs r ON r.id = e.run_id "
            "JOIN invoices i ON i.id = e.invoice_id "
            "JOIN customers c ON c.id = i.customer_id "
            "WHERE e.kind = 'mise_a_disposition' AND e.status = %s "
            "AND NOT EXISTS (SELECT 1 FROM outbox_items o WHERE o.exchange_id = e.id) "
            "AND (e.run_id = %s OR r.status <> 'en_cours' "
            "     OR r.started_at < now() - %s::interval) "
            "ORDER BY e.run_id, c.id, i.number",
            (PENDING, run_id, _ABANDONED_AFTER),
        )
        rows = (_Row(*r) for r in cur)
        for (group_run, customer_id), items in groupby(
            rows, key=lambda row: (row.run_id, row.customer_id)
        ):
            _compose_one(conn, env, settings, group_run, customer_id, list(items))
            composed += 1
    return composed


def _compose_one(
    conn: psycopg.Connection,
    env: Environment,
    settings: Settings,
    run_id: int,
    customer_id: int,
    items: list[_Row],
) -> None:
    first = items[0]
    signature_address = settings.text("EMETTEUR_COURRIEL")
    sender = (env.smtp.sender if env.smtp else None) or signature_address
    content = render_notice(
        seller_name=settings.text("EMETTEUR_NOM"),
        customer_code=first.customer_code,
        customer_name=first.customer_name,
        notices=[Notice(r.number, r.invoice_date, r.kind == "avoir") for r in items],
        portal_url=settings.text("PORTAIL_URL"),
        signature=settings.text("EMETTEUR_SIGNATURE_COURRIEL"),
        sender_address=signature_address,
    )
    recipients = list(first.emails)
    # Preparation refuses portal customers without an address; one removed since is said here.
    error = None if recipients else "client sans adresse e-mail : courriel non envoyé"
    row = conn.execute(
        "INSERT INTO outbox (run_id, customer_id, message_id, sender, recipients, recipient_name, "
        "subject, body_text, body_html, attach_pdf, status, last_error) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, message_id",
        (
            run_id,
            customer_id,
            new_message_id(run_id, first.customer_code, sender),
            sender,
            recipients,
            first.contact_name or first.customer_name,
            content.subject,
            content.text,
            content.html,
            settings.flag("COURRIEL_PIECE_JOINTE"),
            FAILED if error else PENDING,
            error,
        ),
    ).fetchone()
    assert row is not None
    outbox_id, message_id = row
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO outbox_items (outbox_id, exchange_id, invoice_id) VALUES (%s, %s, %s)",
            [(outbox_id, r.exchange_id, r.invoice_id) for r in items],
        )
    _update_exchanges(
        conn, outbox_id, FAILED if error else PENDING, {"courriel": message_id, "erreur": error}
    )


def _update_exchanges(
    conn: psycopg.Connection, outbox_id: int, status: str, report: dict[str, Any]
) -> None:
    # A previous attempt's error is history once the message went (or failed anew).
    conn.execute(
        "UPDATE exchanges e SET status = %s, report = (e.report - 'erreur') || %s "
        "FROM outbox_items o "
        "WHERE o.outbox_id = %s AND o.exchange_id = e.id",
        (status, Jsonb({k: v for k, v in report.items() if v is not None}), outbox_id),
    )


def _deliver(
    conn: psycopg.Connection,
    env: Environment,
    settings: Settings,
    run_id: int | None,
    sleep: Callable[[float], None],
) -> tuple[int, int]:
    _settle_interrupted(conn)
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM outbox WHERE status = %s ORDER BY id", (PENDING,)
        ).fetchall()
    ]
    if not ids:
        return 0, 0
    env.refuse_demo_fallbacks(smtp=True)
    mailer = mailer_for(env.smtp, env.outbox_dir)
    archive = env.archive()
    per_minute = settings.number("COURRIELS_PAR_MINUTE")  # 0: no limit
    interval = 60.0 / per_minute if mailer.throttled and per_minute > 0 else 0
    last_sent = _last_handed_over(conn) if interval else None
    sent = failed = 0
    try:
        for outbox_id in ids:
            with conn.transaction():
                row = conn.execute(
                    "SELECT message_id, sender, recipients, recipient_name, subject, body_text, "
                    "body_html, attach_pdf FROM outbox WHERE id = %s AND status = %s "
                    "FOR UPDATE SKIP LOCKED",
                    (outbox_id, PENDING),
                ).fetchone()
                if row is None:  # sent meanwhile, or being sent by another deliverer
                    continue
                message_id, sender, recipients, name, subject, text, html, attach = row
                try:
                    message = build_message(
                        message_id=message_id,
                        sender=sender,
                        sender_name=settings.text("EMETTEUR_NOM"),
                        recipients=recipients,
                        recipient_name=name,
                        content=NoticeContent(subject, text, html),
                        attachments=_attachments(conn, archive, outbox_id) if attach else (),
                    )
                except DeliveryError as error:
                    failed += 1
                    _record_failure(conn, outbox_id, message_id, error)
                    continue
                # The wait comes after the message's work (its row taken, the message built, its
                # attachments read), which so does not lengthen the interval, and before its row
                # is marked `en_cours`: a task killed while waiting rolls back, leaving it plainly
                # pending, not in doubt. Counted from the server's answer to the previous message,
                # whatever each one's work: none reaches the server sooner than `interval` after,
                # the previous one sent by another delivery included (`_last_handed_over`).
                if last_sent is not None and interval:
                    sleep(max(0.0, last_sent + interval - time.monotonic()))
                # Committed before the server sees it: a task killed from here on leaves it
                # `en_cours`, which the next deliverer settles as `incertain`, never resends.
                conn.execute(
                    "UPDATE outbox SET status = %s, attempt_started_at = now(), transport = %s "
                    "WHERE id = %s",
                    (SENDING, mailer.description, outbox_id),
                )
            try:
                mailer.send(message)
            except DeliveryError as error:
                failed += 1
                with conn.transaction():
                    if isinstance(error, MailOutcomeUnknown):
                        _record_uncertain(conn, outbox_id, message_id, str(error))
                    else:
                        _record_failure(conn, outbox_id, message_id, error)
                if isinstance(error, MailDeliveryError) and error.transport_down:
                    break
                continue
            finally:
                last_sent = time.monotonic()
            with conn.transaction():
                _record_sent(conn, outbox_id, message_id, recipients, run_id, mailer)
            sent += 1
    finally:
        mailer.close()
    return sent, failed


def _last_handed_over(conn: psycopg.Connection) -> float | None:
    """When (`time.monotonic`) the server accepted the last e-mail sent over SMTP by any
    deliverer, None if never: the rate holds from it. A delivery right after another (a
    retried chunk task, `rapport`, a re-send), in another process or on another host, sent its
    first message at once. Its `sent_at` is stamped right after the server's answer; both
    times are the database's clock, so the hosts' clocks do not matter."""
    row = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp() - max(sent_at)) FROM outbox "
        "WHERE sent_at IS NOT NULL AND transport LIKE %s",
        (SMTP_TRANSPORT + "%",),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    # A clock set back since: at most one interval to wait, never more.
    return time.monotonic() - max(0.0, float(row[0]))


def _settle_interrupted(conn: psycopg.Connection) -> None:
    """Messages left `en_cours` by a deliverer that died (we hold the mail lock, so none is
    alive): over SMTP the server may have them, so `incertain`; a folder write is redone."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, message_id, transport FROM outbox WHERE status = %s FOR UPDATE",
            (SENDING,),
        ).fetchall()
        for outbox_id, message_id, transport in rows:
            if (transport or "").startswith(SMTP_TRANSPORT):
                _record_uncertain(
                    conn,
                    outbox_id,
                    message_id,
                    "traitement interrompu pendant la remise au serveur SMTP : il a peut-être "
                    "reçu le message",
                )
            else:
                conn.execute("UPDATE outbox SET status = %s WHERE id = %s", (PENDING, outbox_id))


def _record_uncertain(
    conn: psycopg.Connection, outbox_id: int, message_id: str, reason: str
) -> None:
    error = f"{reason} — {UNCERTAIN_HINT.format(message_id=message_id)}"
    conn.execute(
        "UPDATE outbox SET status = %s, attempts = attempts + 1, last_error = %s WHERE id = %s",
        (UNCERTAIN, error, outbox_id),
    )
    _update_exchanges(conn, outbox_id, UNCERTAIN, {"courriel": message_id, "erreur": error})
    log.warning("Courriel %s incertain : %s", message_id, error)


def resend(env: Environment, message_ids: list[str]) -> dict[str, Any]:
    """The clerk's deliberate re-send of `incertain` (or refused) messages, same Message-ID:
    they are queued again, then every pending message is delivered."""
    with connect(env.dsn, autocommit=True) as conn:
        queued = [
            r[0]
            for r in conn.execute(
                "UPDATE outbox SET status = %s WHERE message_id = ANY(%s) "
                "AND status IN (%s, %s) RETURNING message_id",
                (PENDING, message_ids, UNCERTAIN, FAILED),
            ).fetchall()
        ]
    summary: dict[str, Any] = dict(deliver_pending(env))
    summary["remis_en_file"] = queued
    summary["ignores"] = sorted(set(message_ids) - set(queued))
    return summary


def uncertain_messages(conn: psycopg.Connection) -> list[tuple[str, str, str, str]]:
    """(Message-ID, customer, recipients, reason) of each `incertain` message."""
    return [
        (mid, f"{code} {name}", ", ".join(recipients), error or "")
        for mid, code, name, recipients, error in conn.execute(
            "SELECT o.message_id, c.code, c.name, o.recipients, o.last_error FROM outbox o "
            "JOIN customers c ON c.id = o.customer_id WHERE o.status = %s ORDER BY o.id",
            (UNCERTAIN,),
        ).fetchall()
    ]


def _attachments(
    conn: psycopg.Connection, archive: DocumentArchive, outbox_id: int
) -> list[Attachment]:
    """The signed PDFs as archived in the GED, checked against the sha256 indexed at send time.

    Archiving off: there is no archived PDF, and the message goes without it.
    """
    rows = conn.execute(
        "SELECT i.number, d.location, d.sha256 FROM outbox_items o "
        "JOIN invoices i ON i.id = o.invoice_id "
        "LEFT JOIN documents d ON d.invoice_id = i.id AND d.kind = 'facture' "
        "WHERE o.outbox_id = %s ORDER BY i.number",
        (outbox_id,),
    ).fetchall()
    out: list[Attachment] = []
    for number, location, sha256 in rows:
        if location is None:
            continue
        try:
            data = archive.read(location)
        except (OSError, DeliveryError) as error:
            raise DeliveryError(
                f"PDF de la facture {number} illisible dans la GED : {error}"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256.strip():
            raise DeliveryError(f"PDF de la facture {number} altéré dans la GED : non joint")
        out.append(Attachment(f"Facture-{number}.pdf", data))
    return out


def _record_sent(
    conn: psycopg.Connection,
    outbox_id: int,
    message_id: str,
    recipients: list[str],
    run_id: int | None,
    mailer: Mailer,
) -> None:
    row = conn.execute(
        "UPDATE outbox SET status = %s, sent_at = now(), attempts = attempts + 1, "
        "last_error = NULL, sent_by_run = %s, transport = %s WHERE id = %s RETURNING sent_at",
        (SENT, run_id, mailer.description, outbox_id),
    ).fetchone()
    sent_at = row[0].isoformat(timespec="seconds") if row else None
    _update_exchanges(
        conn,
        outbox_id,
        SENT,
        {
            "rapport": "courriel de mise à disposition envoyé au client",
            "courriel": message_id,
            "destinataires": recipients,
            "envoye_le": sent_at,
            "transport": mailer.description,
        },
    )
    log.info("Courriel %s envoyé à %s", message_id, ", ".join(recipients))


def _record_failure(
    conn: psycopg.Connection, outbox_id: int, message_id: str, error: DeliveryError
) -> None:
    permanent = isinstance(error, MailDeliveryError) and error.permanent
    status = FAILED if permanent else PENDING
    conn.execute(
        "UPDATE outbox SET status = %s, attempts = attempts + 1, last_error = %s WHERE id = %s",
        (status, str(error), outbox_id),
    )
    _update_exchanges(conn, outbox_id, status, {"courriel": message_id, "erreur": str(error)})
    log.warning(
        "Courriel %s %s : %s",
        message_id,
        "refusé définitivement" if permanent else "non envoyé, à réessayer",
        error,
    )


_STATUS_LABELS = {
    PENDING: "en attente",
    SENDING: "en attente",
    UNCERTAIN: "incertain",
    FAILED: "refusé",
}


def run_mail_summary(conn: psycopg.Connection, run_id: int) -> dict[str, Any]:
    """The e-mails of a run for its report: counts, and the French error of each one not sent.

    `rattrapes`: messages of earlier runs that this run's delivery step finally sent.
    """
    counts: dict[str, int] = dict(
        conn.execute(
            "SELECT status, count(*) FROM outbox WHERE run_id = %s GROUP BY status", (run_id,)
        ).fetchall()
    )
    by_transport: dict[bool, int] = dict(
        conn.execute(
            "SELECT transport LIKE %s, count(*) FROM outbox WHERE run_id = %s AND status = %s "
            "GROUP BY 1",
            (SMTP_TRANSPORT + "%", run_id, SENT),
        ).fetchall()
    )
    caught_up = conn.execute(
        "SELECT count(*) FROM outbox WHERE sent_by_run = %s AND run_id <> %s", (run_id, run_id)
    ).fetchone()
    errors = conn.execute(
        "SELECT c.code, c.name, o.status, o.last_error FROM outbox o "
        "JOIN customers c ON c.id = o.customer_id "
        "WHERE o.run_id = %s AND o.status <> %s ORDER BY c.code",
        (run_id, SENT),
    ).fetchall()
    return {
        "envoyes": counts.get(SENT, 0),
        "remis_smtp": by_transport.get(True, 0),
        "boite_locale": by_transport.get(False, 0),
        "en_attente": counts.get(PENDING, 0) + counts.get(SENDING, 0),
        "incertains": counts.get(UNCERTAIN, 0),
        "en_erreur": counts.get(FAILED, 0),
        "rattrapes": int(caught_up[0]) if caught_up else 0,
        "anomalies": [
            {
                "client": f"{code} {name}",
                "statut": _STATUS_LABELS.get(status, status),
                "motif": error or "",
            }
            for code, name, status, error in errors
        ],
    }
