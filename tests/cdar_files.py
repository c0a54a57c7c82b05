"""CDAR D22B lifecycle files (« cycle de vie ») as a Plateforme Agréée sends them, for the tests.

Built by the package's producer (the one the local PA uses), and validated here again, before it
is returned, against the official schema (`spec/afnor/cdar-d22b/`) compiled on its own: a fixture
that drifts from the schema fails the test that builds it, whatever the code under test does."""

from __future__ import annotations

import functools
from datetime import datetime

from lxml import etree

from postier.domain.lifecycle import SCHEMA_DIR, SCHEMA_NAME, LifecycleStatus, write_lifecycle


@functools.cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / SCHEMA_NAME)))


def _validated(data: bytes) -> bytes:
    schema = _schema()
    assert schema.validate(etree.fromstring(data)), f"CDAR fixture not valid: {schema.error_log}"
    return data


def cdar(number: str, code: str, at: datetime, reason: str = "", *, doc_id: str = "LC-1") -> bytes:
    """One lifecycle message: invoice `number` reached status `code` at `at`."""
    return _validated(write_lifecycle([LifecycleStatus(number, code, at, reason)], doc_id=doc_id))


def cdar_many(*statuses: tuple[str, str, datetime], doc_id: str = "LC-N") -> bytes:
    """One lifecycle message carrying several statuses: (invoice number, code, date) each."""
    items = [LifecycleStatus(number, code, at) for number, code, at in statuses]
    return _validated(write_lifecycle(items, doc_id=doc_id))
