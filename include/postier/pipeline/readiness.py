"""What a treatment needs before it starts, checked once at the start of its run.

A missing Chorus server or an unusable signing key would otherwise surface invoice by invoice,
in every chunk, and the run could still end green having done nothing: a configuration problem
stops the run at once, with its French message.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from postier import env_settings
from postier.domain.selection import Selection
from postier.domain.treatments import SEND, Treatment, TreatmentId
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.store.selection import where_clause
from postier.store.settings import Settings

NO_CHORUS_SERVER = (
    "la dématérialisation Chorus est active (paramètre DEMAT_CHORUS) mais aucun serveur Chorus "
    "Pro n'est configuré (connexion Airflow « postier_chorus_sftp », ou POSTIER_CHORUS_SFTP_URL "
    "et POSTIER_CHORUS_HOST_KEY) : configurez-le, ou désactivez DEMAT_CHORUS"
)
NO_PLATFORM_SERVER = (
    "la sélection compte des factures de clients « plateforme » mais aucune plateforme agréée "
    "n'est configurée (connexion Airflow « postier_plateforme », ou POSTIER_PLATEFORME_URL) : "
    "configurez-la, ou retirez ces factures de la sélection"
)


def signs(t: Treatment) -> bool:
    """The treatments that sign documents: the send (nightly too) and the Chorus collection."""
    return t.transition is SEND or t.id is TreatmentId.CHORUS_RECUPERER


def check_configuration(
    env: Environment,
    conn: psycopg.Connection,
    settings: Settings,
    t: Treatment,
    selection: Selection,
) -> None:
    """Raise `ConfigurationError` or `SigningError` (French) if `t` cannot work as configured
    on `selection`."""
    if t.transition is SEND:
        from postier.pipeline.sending import check_send_configuration

        check_send_configuration(settings)
        env.refuse_demo_fallbacks(signing=True, ged=settings.archiving, smtp=settings.demat_artis)
        # Connections are read when first used: read those the send uses after its chunks now,
        # so one that cannot be read stops the run here, before anything is signed.
        _ = (env.smtp if settings.demat_artis else None, env.ged_url if settings.archiving else "")
        env_settings.delivery_lock_wait()
        if env.plateforme is None and _selects_channel(conn, selection, "plateforme"):
            raise ConfigurationError(NO_PLATFORM_SERVER)
    if t.id is TreatmentId.CHORUS_RECUPERER and settings.demat_chorus and env.chorus_sftp is None:
        raise ConfigurationError(NO_CHORUS_SERVER)
    if signs(t):
        # Loads the key with its passphrase: a SigningError says what is wrong.
        env.signer(settings.seller().name)


def _selects_channel(conn: psycopg.Connection, selection: Selection, channel: str) -> bool:
    where, params = where_clause(selection)
    row = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM invoices i JOIN customers c ON c.id = i.customer_id "
            "WHERE c.channel = %(channel)s AND {})"
        ).format(where),
        params | {"channel": channel},
    ).fetchone()
    return bool(row and row[0])
