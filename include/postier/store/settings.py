"""Business settings of the `settings` table, typed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from postier.domain.models import Address, Seller
from postier.errors import ConfigurationError


@dataclass(frozen=True)
class Settings:
    values: dict[str, str | int | bool]

    def __getitem__(self, key: str) -> str | int | bool:
        try:
            return self.values[key]
        except KeyError:
            raise ConfigurationError(f"paramètre « {key} » absent de la table settings") from None

    def flag(self, key: str) -> bool:
        return bool(self[key])

    def number(self, key: str) -> int:
        return int(self[key])

    def text(self, key: str) -> str:
        return str(self[key])

    @property
    def archiving(self) -> bool:
        return self.flag("ARCHIVAGE_FACTURES")

    @property
    def demat_artis(self) -> bool:
        return self.flag("DEMAT_ARTIS")

    @property
    def demat_chorus(self) -> bool:
        return self.flag("DEMAT_CHORUS")

    @property
    def days_before_send(self) -> int:
        return self.number("NB_JOURS_AVANT_ENVOI_FACTURES")

    def seller(self) -> Seller:
        t = self.text
        return Seller(
            name=t("EMETTEUR_NOM"),
            legal_form=t("EMETTEUR_FORME_JURIDIQUE"),
            capital=t("EMETTEUR_CAPITAL"),
            address=Address(
                t("EMETTEUR_ADRESSE"), None, t("EMETTEUR_CODE_POSTAL"), t("EMETTEUR_VILLE")
            ),
            siren=t("EMETTEUR_SIREN"),
            siret=t("EMETTEUR_SIRET"),
            vat_number=t("EMETTEUR_TVA"),
            rcs=t("EMETTEUR_RCS"),
            iban=t("EMETTEUR_IBAN"),
            bic=t("EMETTEUR_BIC"),
            email=t("EMETTEUR_COURRIEL"),
            late_penalty_rate=t("TAUX_PENALITES_RETARD"),
            discount_terms=t("CONDITIONS_ESCOMPTE"),
            # Settings added with the reform (migration 012): optional, so a database migrated
            # before keeps working with the defaults (the SIREN, no option).
            einvoicing_address=str(self.values.get("EMETTEUR_ADRESSE_ELECTRONIQUE") or "") or None,
            option_debits=bool(self.values.get("EMETTEUR_OPTION_DEBITS", False)),
        )


def _typed(value: str, value_type: str, key: str) -> str | int | bool:
    if value_type == "bool":
        lowered = value.strip().lower()
        if lowered not in {"true", "false", "oui", "non", "1", "0"}:
            raise ConfigurationError(f"paramètre {key} : oui/non attendu, reçu « {value} »")
        return lowered in {"true", "oui", "1"}
    if value_type == "int":
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError(
                f"paramètre {key} : nombre attendu, reçu « {value} »"
            ) from None
    return value


def load_settings(conn: psycopg.Connection) -> Settings:
    rows = conn.execute("SELECT key, value, value_type FROM settings").fetchall()
    return Settings({key: _typed(value, vtype, key) for key, value, vtype in rows})


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: str
    value_type: str
    description: str


@dataclass(frozen=True)
class SettingChange:
    key: str
    old_value: str
    new_value: str
    changed_by: str
    changed_at: datetime


def list_settings(conn: psycopg.Connection) -> list[SettingRow]:
    rows = conn.execute(
        "SELECT key, value, value_type, description FROM settings ORDER BY key"
    ).fetchall()
    return [SettingRow(*row) for row in rows]


def change_setting(conn: psycopg.Connection, key: str, value: str, changed_by: str) -> bool:
    """Validate and store a new value, recording who changed what; False when unchanged.

    One transaction, the row locked: two admins saving at once are recorded one after the other,
    each with the value they actually replaced.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT value, value_type FROM settings WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
        if row is None:
            raise ConfigurationError(f"paramètre « {key} » inconnu")
        old, value_type = row
        new = value.strip()
        typed = _typed(new, value_type, key)  # refuses a bad value with a French message
        if value_type == "bool":
            new = "true" if typed else "false"
        if value_type == "int" and int(typed) < 0:
            raise ConfigurationError(f"paramètre {key} : nombre positif attendu, reçu « {new} »")
        if new == old:
            return False
        conn.execute("UPDATE settings SET value = %s WHERE key = %s", (new, key))
        conn.execute(
            "INSERT INTO settings_changes (key, old_value, new_value, changed_by) "
            "VALUES (%s, %s, %s, %s)",
            (key, old, new, changed_by),
        )
    return True


def setting_changes(conn: psycopg.Connection, limit: int = 200) -> list[SettingChange]:
    rows = conn.execute(
        "SELECT key, old_value, new_value, changed_by, changed_at FROM settings_changes "
        "ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [SettingChange(*row) for row in rows]
