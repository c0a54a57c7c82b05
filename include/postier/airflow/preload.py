"""The task code, imported once in the process that forks the task processes.

Airflow forks every task process. The LocalExecutor's workers are forked from the scheduler when
the executor starts, and a worker's task supervisor forks each task's process; a Celery worker's
pool processes are forked from the worker's main process, and fork each task's process the same
way. Whatever these parents imported is already in every task process, shared copy-on-write,
instead of being imported again by each one: the documents package alone (reportlab, pyHanko,
lxml, factur-x) is ≈ 0.8 s of CPU per chunk process.

`preload` imports what a Postier task process imports before and while working, and builds the
documents package's per-process constants (fonts, the Factur-X XSD, the PDF/A-3 objects) by
rendering a sample invoice. Only imports and computation: no database, connection, file kept
open, socket or thread (`tests/unit/test_preload.py`), so forking after it is as safe as before.
It is called by `executors.PreloadingLocalExecutor` (scheduler) and `celery_config` (Celery
worker); if it fails, the executor runs the tasks all the same, each importing its own code.
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime

log = logging.getLogger(__name__)

#: What a task process imports, beyond what Airflow's scheduler or Celery worker already has.
PRELOADED = (
    # Airflow's side: the task runner, and what the DAG files import (parsed by every task).
    "airflow.sdk.execution_time.task_runner",
    "postier.airflow.dag_factory",
    "postier.airflow.chorus_returns_dag",
    "postier.airflow.lifecycle_dag",
    # The tasks' modules (imported inside the task functions).
    "postier.airflow.runtime",
    "postier.airflow.fresh_thread",
    "postier.pipeline.runs",
    "postier.pipeline.handlers",
    "postier.pipeline.sending",
    "postier.pipeline.readiness",
    "postier.pipeline.reports",
    "postier.pipeline.mailing",
    "postier.pipeline.plateforme",
    "postier.pipeline.chorus_returns",
    "postier.pipeline.lifecycle",
    # What a chunk imports when it works: the documents, the signer's pyHanko half (its
    # constructor's, 0.4 s), the run files' and the GED's storage.
    "postier.documents",
    "pyhanko.sign.general",
    "fsspec.implementations.local",
    "fsspec.implementations.chained",
)

#: What a task logs when it starts working (`runtime.environment()`): its process's CPU so far
#: (counted from its fork) and where its code came from.
STARTUP_LOG = "Processus de tâche : %.2f s de CPU avant son travail, code des tâches %s"
PRELOADED_CODE, IMPORTED_CODE = "préchargé", "importé par la tâche"

_preloaded = False


def preloaded() -> bool:
    """Whether `preload` succeeded in this process or in the one it was forked from."""
    return _preloaded


def preload() -> bool:
    """Import the task code and build the documents' constants; False (logged once, in French)
    when something failed: the tasks then import what they need themselves, as without it."""
    global _preloaded
    try:
        for name in PRELOADED:
            importlib.import_module(name)
        _build_document_constants()
    except Exception as error:  # whatever it is, the executor must still run the tasks
        log.warning(
            "Préchargement du code des tâches impossible (%s : %s) : chaque tâche importera "
            "elle-même ce dont elle a besoin.",
            type(error).__name__,
            error,
        )
        return False
    _preloaded = True
    return True


def _build_document_constants() -> None:
    """What the documents package caches per process (`functools.cache`): fonts, texts, units,
    the XSD, the sRGB profile, the XMP and PDF/A-3 templates, built by rendering a sample."""
    from postier.documents import render_final_invoice
    from postier.documents.samples import sample_invoice, sample_seller
    from postier.documents.texts import load_texts

    render_final_invoice(sample_invoice(), sample_seller(), moment=datetime(2026, 1, 1, tzinfo=UTC))
    load_texts("bill_of_exchange")
