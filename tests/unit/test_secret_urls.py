"""A malformed connection URL never shows its password, in the message or the traceback."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest

from postier.delivery.chorus_sftp import SftpConfig
from postier.delivery.mail import SmtpConfig
from postier.delivery.plateforme import PlatformConfig
from postier.errors import ConfigurationError
from postier.store.database import check_dsn

#: Pieces of the password that a leaking parser would quote.
SECRET = "Zq8Kp3#wLm/?x%zz"
PIECES = ["Zq8", "Kp3", "wLm", "%zz"]


def _smtp_env(url: str) -> object:
    return SmtpConfig.from_url(url)


def _sftp_env(url: str) -> object:
    return SftpConfig.from_env({"POSTIER_CHORUS_SFTP_URL": url, "POSTIER_CHORUS_HOST_KEY": "x"})


def _platform_env(url: str) -> object:
    return PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": url})


@pytest.mark.parametrize(
    ("parse", "url", "shown"),
    [
        (
            _smtp_env,
            f"smtp://facturation:{SECRET}@relais.example.fr:587",
            "smtp://relais.example.fr",
        ),
        (
            _smtp_env,
            "smtp://facturation:Zq8Kp3wLm@relais.example.fr:5x7",
            "smtp://relais.example.fr",
        ),
        (
            _smtp_env,
            "smtp://facturation:Zq8Kp3@wLm@relais.example.fr:abc",
            "smtp://relais.example.fr",
        ),
        (_sftp_env, f"sftp://depot:{SECRET}@chorus.example.fr:22/flux", "sftp://chorus.example.fr"),
        (_sftp_env, "sftp://depot:Zq8Kp3wLm@[::1:22/flux", "sftp://"),
        (
            _platform_env,
            f"https://facturation:{SECRET}@pa.example.fr/flow-service?token_url=https://t.example",
            "https://pa.example.fr",
        ),
        (
            check_dsn,
            "postgresql://postier_app:Zq8Kp3%zzwLm@db.example.fr/erp",
            "postgresql://db.example.fr",
        ),
    ],
)
def test_bad_url_error_names_scheme_and_host_only(
    parse: Callable[[str], object], url: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse(url)
    told = "".join(traceback.format_exception(caught.value))
    assert shown in told
    leaked = [piece for piece in [*PIECES, "facturation", "depot", "postier_app"] if piece in told]
    assert leaked == []


def test_encoded_password_still_parses() -> None:
    config = SmtpConfig.from_url("smtp://facturation:Zq8%23wLm@relais.example.fr:587?starttls=1")
    assert (config.password, config.port, config.security) == ("Zq8#wLm", 587, "starttls")
    assert "Zq8" not in repr(config)


def test_platform_connection_without_base_url_is_https_on_its_host() -> None:
    extra = {"token_url": "https://pa.example.fr/token"}
    config = PlatformConfig.from_connection("pa.example.fr", 8443, "client", "s3cret", extra)
    assert (config.base_url, config.client_id) == ("https://pa.example.fr:8443", "client")
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigurationError, match="token_url"):
        PlatformConfig.from_connection("pa.example.fr", None, "client", "s3cret", {})
