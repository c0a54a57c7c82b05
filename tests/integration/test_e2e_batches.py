"""The end-to-end tests' batch numbers (`e2e.batches`): a test that adds invoices to a batch
another test of the session added to, in the database they share, is named with that test."""

from __future__ import annotations

from builders import insert_paper_invoices
from e2e.batches import BatchOwners


def test_a_batch_seeded_again_by_another_test_is_named_with_its_owner(db_dsn: str) -> None:
    owners = BatchOwners()

    # `rapport`'s test seeds batch 601 first …
    mark = owners.mark(db_dsn)
    insert_paper_invoices(db_dsn, "SLOT", 601, 1)
    assert owners.claim(db_dsn, mark, "test_rapport_waits") == {}

    # … then the clerk's browser test seeds 601 (which it lists) and 602.
    mark = owners.mark(db_dsn)
    insert_paper_invoices(db_dsn, "W", 601, 5)
    insert_paper_invoices(db_dsn, "W9", 602, 1)
    assert owners.claim(db_dsn, mark, "test_a_clerks_day") == {601: "test_rapport_waits"}

    # A test's own batches, seeded again (a parametrized case, a retry), and nothing seeded.
    mark = owners.mark(db_dsn)
    insert_paper_invoices(db_dsn, "SLOT-BIS", 601, 1)
    assert owners.claim(db_dsn, mark, "test_rapport_waits") == {}
    assert owners.claim(db_dsn, owners.mark(db_dsn), "test_nothing_seeded") == {}
