"""Settings of the deployment read from the environment (`POSTIER_*` variables; the business
settings live in the ERP's `settings` table): each read in one place, a bad value refused with
a French `ConfigurationError` naming the variable, not a Python `ValueError`. Nothing but the
standard library: the DAG files read `POSTIER_WORKERS` when they are parsed."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

from postier.errors import ConfigurationError

WORKERS = "POSTIER_WORKERS"
DELIVERY_LOCK_WAIT = "POSTIER_DELIVERY_LOCK_WAIT_SECONDS"


def workers(environ: Mapping[str, str] = os.environ) -> int:
    """`POSTIER_WORKERS` (4 unless told): the chunk tasks a run maps, one per worker slot, and
    the shares its chunks are planned for. An integer ≥ 1."""
    return int(
        _number(
            environ,
            WORKERS,
            4,
            int,
            "un nombre entier au moins égal à 1 est attendu (les emplacements de tâches des "
            "workers)",
            lambda value: value >= 1,
        )
    )


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
