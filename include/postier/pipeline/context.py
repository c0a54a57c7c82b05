"""What a pipeline step needs at execution time, resolved by the caller (Airflow adapter, CLI)."""

from __future__ import annotations

import fcntl
import functools
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from postier import env_settings
from postier.errors import ConfigurationError
from postier.storage import GED, RunFolder, Storage, StorageConfig, open_storage
from postier.store.database import connect

if TYPE_CHECKING:
    from postier.delivery.annuaire import DirectoryConfig
    from postier.delivery.archive import DocumentArchive
    from postier.delivery.chorus_sftp import SftpConfig
    from postier.delivery.mail import SmtpConfig
    from postier.delivery.plateforme import PlatformConfig
    from postier.documents import Signer


#: What production mode refuses, and what to configure instead (French, for the clerk's report).
_DEMO_FALLBACKS = {
    "signing": "la clé de signature de démonstration (configurez la connexion postier_signing : "
    "certificat PKCS#12 et sa phrase secrète)",
    "ged": "la GED locale du poste (configurez la connexion postier_ged ou POSTIER_GED_URL)",
    "smtp": "la boîte d'envoi locale au lieu d'un serveur SMTP (configurez la connexion "
    "postier_smtp ou POSTIER_SMTP_URL)",
}


@dataclass(frozen=True)
class Environment:
    """Connections and places, resolved at execution time: never at DAG-parse time."""

    dsn: str = field(repr=False)
    home: Path
    workers: int = 4
    #: PKCS#12 content and passphrase for signing; None means the local demo key.
    signing_pkcs12: bytes | None = field(default=None, repr=False)
    signing_passphrase: bytes | None = field(default=None, repr=False)
    #: Why the configured signing key could not be read (French), raised when signing.
    signing_problem: str | None = None
    timestamp_url: str | None = None
    #: GED location (fsspec URL); the local folder `<home>/ged` when empty.
    ged_url: str = ""
    #: The Chorus Pro SFTP server (`postier_chorus_sftp`); None when not configured. Its
    #: password and private key are hidden from `repr`.
    chorus_sftp: SftpConfig | None = None
    #: SMTP server for customer e-mails; None writes them to `<home>/outbox/` (.eml files).
    smtp: SmtpConfig | None = None
    #: Our Plateforme Agréée (`postier_plateforme`); None when not configured.
    plateforme: PlatformConfig | None = None
    #: The directory (`postier_annuaire`), where buyers' e-invoicing addresses are looked up.
    annuaire: DirectoryConfig | None = None
    #: `POSTIER_ENV=production`: the demo key, the local GED and the local outbox are refused.
    production: bool = field(default_factory=env_settings.production_mode)
    #: Where runs' files live (`POSTIER_STORAGE_URL`, `postier_storage`); `home` when unset.
    storage_config: StorageConfig = field(default_factory=StorageConfig.from_env)
    #: How an `sftp://` GED is reached (`POSTIER_GED_HOST_KEY`, `_KEY_FILE`, `_OPTIONS`, or the
    #: `postier_ged` connection's extra); its address is `ged_url`.
    ged_access: StorageConfig = field(
        default_factory=lambda: StorageConfig.from_env(place=GED), repr=False
    )

    def refuse_demo_fallbacks(
        self, *, signing: bool = False, ged: bool = False, smtp: bool = False
    ) -> None:
        """In production mode, a French `ConfigurationError` naming each needed service that is
        not configured, instead of falling back to its local demo stand-in."""
        if not self.production:
            return
        missing = {
            "signing": signing and self.signing_pkcs12 is None,
            "ged": ged and not self.ged_url,
            "smtp": smtp and self.smtp is None,
        }
        refused = [_DEMO_FALLBACKS[name] for name, is_missing in missing.items() if is_missing]
        if refused:
            raise ConfigurationError(
                "mode production (POSTIER_ENV=production) : refus d'utiliser " + " ; ".join(refused)
            )

    @property
    def archive_url(self) -> str:
        """The GED; what writes or reads it calls `refuse_demo_fallbacks(ged=True)` first."""
        return self.ged_url or str(self.home / "ged")

    def archive(self) -> DocumentArchive:
        """The GED at `archive_url`, reached through `ged_access`."""
        from postier.delivery.archive import DocumentArchive

        return DocumentArchive(self.archive_url, self.ged_access)

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    def connect(self) -> psycopg.Connection[Any]:
        return connect(self.dsn)

    @property
    def storage(self) -> Storage:
        """The runs' storage, opened once per process."""
        return open_storage(self.storage_config, self.home)

    def run_folder(self, run_id: int, treatment: str) -> RunFolder:
        """The folder of a new run, in the storage every task of the run reaches."""
        return self.storage.run_folder(run_id, treatment)

    def signer(self, seller_name: str = "Postier") -> Signer:
        """The signing key, loaded once per process (the expensive part of signing). Without
        `postier_signing`, a demo key whose certificate names `seller_name`."""
        if self.signing_problem:
            from postier.errors import SigningError

            raise SigningError(self.signing_problem)
        if self.signing_pkcs12 is None:
            self.refuse_demo_fallbacks(signing=True)
            pkcs12, passphrase = demo_identity(self.home, seller_name)
            return _signer(pkcs12, passphrase, self.timestamp_url)
        return _signer(self.signing_pkcs12, self.signing_passphrase, self.timestamp_url)


@functools.lru_cache(maxsize=4)
def _signer(pkcs12: bytes, passphrase: bytes | None, timestamp_url: str | None) -> Signer:
    from postier.documents import Signer, SigningConfig

    return Signer(SigningConfig(pkcs12, passphrase, timestamp_url))


def demo_identity(home: Path, seller_name: str) -> tuple[bytes, bytes]:
    """A local demo signing identity (test CA + certificate naming the seller), made on first
    use under `<home>/signing/`, again when the seller's name changes — for `make demo` and
    development only; production configures `postier_signing`. Never committed: `.postier/`
    is ignored by git."""
    from postier.documents.samples import sample_identity

    folder = home / "signing"
    p12, secret, ca = folder / "demo.p12", folder / "demo.passphrase", folder / "demo-ca.der"
    named = folder / "demo.organization"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Two runs starting at once on a fresh home must not each make an identity and read the
    # other's certificate with their own passphrase: one makes it, the other waits and reads it.
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not p12.exists() or not named.exists() or named.read_text() != seller_name:
            identity = sample_identity(
                secrets.token_urlsafe(24).encode(),
                common_name=f"{seller_name} (démo Postier)",
                organization=seller_name,
            )
            named.write_text(seller_name)
            secret.touch(mode=0o600)
            secret.write_bytes(identity.passphrase)
            ca.write_bytes(identity.ca_cert_der)
            tmp = p12.with_suffix(".part")
            tmp.touch(mode=0o600)
            tmp.write_bytes(identity.pkcs12)
            tmp.replace(p12)
        return p12.read_bytes(), secret.read_bytes()
