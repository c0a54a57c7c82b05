"""Settings of the deployment read from the environment (`POSTIER_*` variables; the business
settings live in the ERP's `settings` table): each read in one place, a bad value refused with
a French `ConfigurationError` naming the variable, not a Python `ValueError`. Nothing but the
standard library: the DAG files read `POSTIER_WORKERS`, `POSTIER_TASK_RETRIES`,
`POSTIER_RETRY_DELAY_SECONDS` and `POSTIER_CONFIRMATION_MINUTES` when they are parsed."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from postier.errors import ConfigurationError

WORKERS = "POSTIER_WORKERS"
DELIVERY_LOCK_WAIT = "POSTIER_DELIVERY_LOCK_WAIT_SECONDS"
TASK_RETRIES = "POSTIER_TASK_RETRIES"
RETRY_DELAY = "POSTIER_RETRY_DELAY_SECONDS"
CONFIRMATION_MINUTES = "POSTIER_CONFIRMATION_MINUTES"
ENV = "POSTIER_ENV"

#: `POSTIER_ENV`'s values: production mode or not. Unset or empty is `development`.
_ENVIRONMENTS = {"production": True, "development": False}


def workers(environ: Mapping[str, str] = os.environ) -> int:
    """`POSTIER_WORKERS` (4 unless told): the chunk tasks a run maps, one per worker slot, and
    the shares its chunks are planned for. An integer ≥ 1."""
    return _integer(environ, WORKERS, 4, 1, "(les emplacements de tâches des workers)")


def task_defaults(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The `default_args` of every Postier DAG: `POSTIER_TASK_RETRIES` (2 unless told, an
    integer ≥ 0) retries of a failed task, `POSTIER_RETRY_DELAY_SECONDS` (30 unless told, an
    integer ≥ 0) apart."""
    retries = _integer(
        environ, TASK_RETRIES, 2, 0, "(les nouvelles tentatives d'une tâche en échec)"
    )
    delay = _integer(
        environ,
        RETRY_DELAY,
        30,
        0,
        "(les secondes d'attente avant de relancer une tâche en échec)",
    )
    return {"owner": "facturation", "retries": retries, "retry_delay": timedelta(seconds=delay)}


def confirmation_timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    """`POSTIER_CONFIRMATION_MINUTES` (120 unless told): how long a definitive send's
    confirmation waits for the clerk's answer before sending nothing. An integer ≥ 1."""
    minutes = _integer(
        environ,
        CONFIRMATION_MINUTES,
        120,
        1,
        "(les minutes d'attente de la réponse à la confirmation d'un envoi définitif)",
    )
    return timedelta(minutes=minutes)


def delivery_lock_wait(environ: Mapping[str, str] = os.environ) -> float:
    """`POSTIER_DELIVERY_LOCK_WAIT_SECONDS` (300 unless told): how long a send's deliverer, or
    `rapport`, waits for the run's delivery lock held by another attempt before failing (to be
    retried). A number of seconds > 0 (decimals allowed)."""
    return _number(
        environ,
        DELIVERY_LOCK_WAIT,
        300.0,
        float,
        "un nombre de secondes supérieur à 0 est attendu (attente du verrou de livraison d'un "
        "envoi)",
        lambda value: math.isfinite(value) and value > 0,
    )


def production_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """`POSTIER_ENV=production`: no demo stand-in (signing key, local GED, local outbox).
    `development` when unset or empty; any other value is refused (case aside) rather than read
    as « not production »: « prod » must not silently sign with the demo key."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return False
    try:
        return _ENVIRONMENTS[raw.lower()]
    except KeyError:
        raise ConfigurationError(
            f"{ENV} « {raw} » invalide : production ou development est attendu (ou rien : "
            "development, où la clé de signature, la GED et la boîte d'envoi de démonstration "
            "sont permises)"
        ) from None


def _integer(
    environ: Mapping[str, str], name: str, default: int, minimum: int, meaning: str
) -> int:
    """`name`'s integer value, at least `minimum` (`default` when unset or empty), else its
    French refusal saying what it is (`meaning`)."""
    expected = f"un nombre entier au moins égal à {minimum} est attendu {meaning}"
    return int(_number(environ, name, default, int, expected, lambda value: value >= minimum))


def _number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    parse: Callable[[str], float],
    expected: str,
    valid: Callable[[float], bool],
) -> float:
    """`name`'s value (`default` when unset or empty), else its French refusal."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or not valid(value):
        raise ConfigurationError(f"{name} « {raw} » invalide : {expected}")
    return value
