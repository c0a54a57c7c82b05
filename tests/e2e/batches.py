"""One test per batch number in a Postier database the end-to-end tests share.

The end-to-end tests share a Postier database per Airflow (the session's `airflow`, a module's
`celery_airflow`) and each keeps to its batch numbers: a test that seeds invoices in a batch
another test seeded finds that test's invoices in its list, its run, its counts, and one of the
two breaks, depending on the order they run in (batch 601: `rapport`'s held invoice in the
clerk's browser test's list). `BatchOwners` records which test first added invoices to each
batch of a database and names the test that adds invoices to a batch another one owns
(`tests/e2e/conftest.py` checks every test against it).
"""

from __future__ import annotations

import psycopg


class BatchOwners:
    """For each (database, batch number), the test that first added invoices to it."""

    def __init__(self) -> None:
        self._owners: dict[tuple[str, int], str] = {}

    @staticmethod
    def mark(dsn: str) -> int:
        """Where the invoices a test adds from now on begin (the last invoice id so far)."""
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM invoices").fetchone()
        return int(row[0]) if row else 0

    def claim(self, dsn: str, mark: int, test: str) -> dict[int, str]:
        """Record `test` as the owner of the batches of the invoices added after `mark`; those
        another test owns, with their owner."""
        with psycopg.connect(dsn) as conn:
            batches = [
                int(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT batch_number FROM invoices "
                    "WHERE id > %s AND batch_number IS NOT NULL ORDER BY 1",
                    (mark,),
                )
            ]
        owners = {batch: self._owners.setdefault((dsn, batch), test) for batch in batches}
        return {batch: owner for batch, owner in owners.items() if owner != test}
