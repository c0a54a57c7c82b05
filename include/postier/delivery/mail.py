"""Customer e-mail: the spec's message (Jinja2 templates), and two ways out — SMTP or a folder.

`SmtpConfig` is resolved at execution time (Airflow connection `postier_smtp`, else the
`POSTIER_SMTP_URL` environment variable); without one, messages are written as `.eml` files to
the local outbox folder. Neither transport ever logs or reports the password.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from postier import TEMPLATES_DIR
from postier.errors import ConfigurationError, DeliveryError
from postier.service_url import parse_service_url, redacted

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

NOTICE_TEMPLATE = "mise_a_disposition"

_TRUE = {"1", "true", "oui", "yes", "on"}


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server. `security`: 'starttls', 'ssl' or 'none'."""

    host: str
    port: int = 25
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "none"
    #: Envelope and header sender imposed by the relay; the EMETTEUR_COURRIEL setting otherwise.
    sender: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.security not in ("starttls", "ssl", "none"):
            raise ConfigurationError(f"SMTP : sécurité « {self.security} » inconnue")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """`smtp://user:pass@host:port?starttls=1&from=a@b.fr`; `smtps://` is implicit TLS."""
        parts = parse_service_url(
            url,
            name="POSTIER_SMTP_URL",
            schemes=("smtp", "smtps"),
            expected="smtp://hôte:port ou smtps://…",
        )
        query = parts.query
        security = "ssl" if parts.scheme == "smtps" or _flag(query.get("ssl")) else "none"
        if security == "none" and _flag(query.get("starttls")):
            security = "starttls"
        try:
            timeout = float(query.get("timeout", 30))
        except ValueError:
            raise ConfigurationError(
                f"POSTIER_SMTP_URL ({redacted(url)}) : timeout en secondes attendu"
            ) from None
        return cls(
            host=parts.host,
            port=parts.port or (465 if security == "ssl" else 25),
            login=parts.username,
            password=parts.password,
            security=security,
            sender=query.get("from") or None,
            timeout=timeout,
        )

    @classmethod
    def from_connection(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any],
    ) -> SmtpConfig:
        """An Airflow connection: extra `{"starttls": true}` or `{"ssl": true}`, `"from"`."""
        if not host:
            raise ConfigurationError("connexion postier_smtp : hôte absent")
        security = "ssl" if _flag(extra.get("ssl")) else "none"
        if security == "none" and _flag(extra.get("starttls")):
            security = "starttls"
        return cls(
            host=host,
            port=int(port or (465 if security == "ssl" else 25)),
            login=login or None,
            password=password or None,
            security=security,
            sender=str(extra.get("from") or extra.get("from_email") or "") or None,
            timeout=float(extra.get("timeout", 30)),
        )

    @classmethod
    def from_env(cls) -> SmtpConfig | None:
        url = os.environ.get("POSTIER_SMTP_URL", "").strip()
        return cls.from_url(url) if url else None


def _flag(value: object) -> bool:
    return value is True or str(value).strip().lower() in _TRUE


# -- The message ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One line of the message: an invoice made available on the portal."""

    number: str
    invoice_date: date
    credit_note: bool = False

    @property
    def date(self) -> str:
        return f"{self.invoice_date:%d/%m/%Y}"


@dataclass(frozen=True)
class NoticeContent:
    subject: str
    text: str
    html: str


@functools.cache
def _notice_templates() -> jinja2.Environment:
    """The e-mail templates, compiled once per process: an environment per message compiled
    them again for each message, and the delivery step's memory grew with their number."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR / "email"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_notice(
    *,
    seller_name: str,
    customer_code: str,
    customer_name: str,
    notices: Sequence[Notice],
    portal_url: str,
    signature: str,
    sender_address: str,
) -> NoticeContent:
    """Subject, plain text and HTML of the spec's « Courriel type suite à Envoyer »."""
    templates = _notice_templates()
    values: dict[str, Any] = {
        "seller_name": seller_name,
        "customer_code": customer_code,
        "customer_name": customer_name,
        "notices": list(notices),
        "portal_url": portal_url,
        "signature": signature,
        "sender_address": sender_address,
    }
    subject = templates.get_template(f"{NOTICE_TEMPLATE}.subject.j2").render(values).strip()
    values["subject"] = subject
    return NoticeContent(
        subject=subject,
        text=templates.get_template(f"{NOTICE_TEMPLATE}.txt.j2").render(values),
        html=templates.get_template(f"{NOTICE_TEMPLATE}.html.j2").render(values),
    )


def new_message_id(run_id: int, customer_code: str, sender_address: str) -> str:
    """A globally unique Message-ID naming the run and the customer (for support)."""
    domain = sender_address.rpartition("@")[2] or "postier.invalid"
    code = re.sub(r"[^A-Za-z0-9]", "", customer_code) or "client"
    return f"<postier.{run_id}.{code}.{secrets.token_hex(8)}@{domain}>"


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes


def build_message(
    *,
    message_id: str,
    sender: str,
    sender_name: str,
    recipients: Sequence[str],
    content: NoticeContent,
    attachments: Sequence[Attachment] = (),
    recipient_name: str | None = None,
) -> EmailMessage:
    """The message as a mail client writes it (RFC 5322): Date, From and To with names."""
    message = EmailMessage(policy=SMTP)
    message["Message-ID"] = message_id
    message["Date"] = formatdate(localtime=True)
    message["From"] = formataddr((sender_name, sender))
    # The contact's name goes with the first address, the one the ERP holds for them.
    message["To"] = ", ".join(
        formataddr((recipient_name or "", address)) if n == 0 else address
        for n, address in enumerate(recipients)
    )
    message["Subject"] = content.subject
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a no-reply
    message.set_content(content.text, cte="quoted-printable")
    message.add_alternative(content.html, subtype="html", cte="quoted-printable")
    for attachment in attachments:
        message.add_attachment(
            attachment.data, maintype="application", subtype="pdf", filename=attachment.filename
        )
    return message


# -- Transports -------------------------------------------------------------------------------


class MailDeliveryError(DeliveryError):
    """The message did not leave. `permanent`: the server refused it for good (5xx);
    `transport_down`: the server cannot be used at all, the next messages would fail alike."""

    def __init__(
        self, message: str, *, permanent: bool = False, transport_down: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.transport_down = transport_down


class MailOutcomeUnknown(MailDeliveryError):
    """The whole message reached the SMTP server but its answer did not come back: it may have
    been stored and will then be delivered. Never retried automatically."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transport_down=True)


#: Prefix of `Mailer.description` for an SMTP server, as stored in `outbox.transport`.
SMTP_TRANSPORT = "smtp "


class Mailer(Protocol):
    #: Where messages go, for the run report (never a secret).
    description: str
    #: Whether COURRIELS_PAR_MINUTE applies (a real server does).
    throttled: bool

    def send(self, message: EmailMessage) -> None: ...

    def close(self) -> None: ...


def _note_message_end(smtp: _TrackedSMTP | _TrackedSMTPSSL, data: Any) -> None:
    # From the end of the message (CRLF.CRLF) on, a missing answer leaves the outcome unknown.
    if isinstance(data, bytes) and data.endswith(b"\r\n.\r\n"):
        smtp.message_end_sent = True


class _TrackedSMTP(smtplib.SMTP):
    message_end_sent = False

    def send(self, s: Any) -> None:
        super().send(s)
        _note_message_end(self, s)


class _TrackedSMTPSSL(smtplib.SMTP_SSL):
    message_end_sent = False

    def send(self, s: Any) -> None:
        super().send(s)
        _note_message_end(self, s)


class SmtpMailer:
    """One connection, opened on the first message and reused for the following ones."""

    throttled = True

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.description = f"{SMTP_TRANSPORT}{config.address}"
        self._smtp: _TrackedSMTP | _TrackedSMTPSSL | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connect(self) -> _TrackedSMTP | _TrackedSMTPSSL:
        c = self.config
        context = ssl.create_default_context()
        smtp: _TrackedSMTP | _TrackedSMTPSSL
        if c.security == "ssl":
            smtp = _TrackedSMTPSSL(c.host, c.port, timeout=c.timeout, context=context)
        else:
            smtp = _TrackedSMTP(c.host, c.port, timeout=c.timeout)
            if c.security == "starttls":
                smtp.starttls(context=context)
        if c.login:
            smtp.login(c.login, c.password or "")
        return smtp

    def send(self, message: EmailMessage) -> None:
        connecting = self._smtp is None
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            self._smtp.message_end_sent = False
            refused = self._smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            raise MailDeliveryError(
                "destinataire(s) refusé(s) par le serveur SMTP : "
                + ", ".join(f"{addr} ({code})" for addr, (code, _) in error.recipients.items()),
                permanent=all(500 <= code < 600 for code in codes),
            ) from None
        except smtplib.SMTPAuthenticationError as error:
            self._drop()
            raise MailDeliveryError(
                f"authentification refusée par le serveur SMTP {self.config.address} "
                f"(code {error.smtp_code})",
                transport_down=True,
            ) from None
        except smtplib.SMTPResponseException as error:
            self._drop()
            raise MailDeliveryError(
                f"message refusé par le serveur SMTP {self.config.address} : {error.smtp_code} "
                f"{_text(error.smtp_error)}",
                permanent=500 <= error.smtp_code < 600 and not connecting,
                transport_down=connecting or error.smtp_code == 421,
            ) from None
        except (smtplib.SMTPException, OSError) as error:
            in_doubt = self._smtp is not None and self._smtp.message_end_sent
            self._drop()
            if in_doubt:
                raise MailOutcomeUnknown(
                    f"le serveur SMTP {self.config.address} a reçu le message mais n'a pas "
                    f"confirmé sa prise en charge ({type(error).__name__}) : il l'a peut-être "
                    "remis au client"
                ) from None
            raise MailDeliveryError(
                f"serveur SMTP {self.config.address} injoignable : {type(error).__name__} "
                f"{error}".strip(),
                transport_down=True,
            ) from None
        if refused:
            # Accepted for some recipients only: it left, and must not leave twice.
            log.warning("Message %s refusé pour : %s", message["Message-ID"], ", ".join(refused))

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class FolderMailer:
    """The embedded default: each message as `<folder>/<Message-ID>.eml`.

    Named by its Message-ID and written through a temporary name: writing it again replaces the
    same file, so even a crash between the write and the database commit never makes two.
    """

    throttled = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"dossier {folder}"

    def path_for(self, message_id: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9.@_-]", "_", message_id.strip("<>")) + ".eml")

    def send(self, message: EmailMessage) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.path_for(str(message["Message-ID"]))
            tmp = path.with_suffix(".part")
            tmp.write_bytes(message.as_bytes())
            tmp.replace(path)
        except OSError as error:
            raise MailDeliveryError(
                f"écriture du courriel impossible : {error}", transport_down=True
            ) from None

    def close(self) -> None:
        return None


def mailer_for(smtp: SmtpConfig | None, outbox: Path) -> SmtpMailer | FolderMailer:
    return SmtpMailer(smtp) if smtp is not None else FolderMailer(outbox)
