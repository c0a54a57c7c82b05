"""The Airflow bench's e-mail phase sets the deliveries against the send's document step, and
says « — » rather than failing when no chunk logged document CPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import MAIL_ROWS, delivery_against_documents, print_mail  # noqa: E402


def test_the_deliveries_are_set_against_the_document_step_per_invoice_and_per_slot() -> None:
    # 100 e-mails delivered in 5 s (50 ms each); 200 invoices sent, 40 s of document CPU
    # (200 ms each), spread over 2 slots (20 s).
    figures = delivery_against_documents(5.0, 100, 40.0, 200, 2)
    assert figures["document_ms"] == pytest.approx(200.0)
    assert figures["delivery_over_document"] == pytest.approx(0.25)
    assert figures["delivery_over_send_documents"] == pytest.approx(0.25)


def test_no_document_cpu_logged_gives_no_figure_instead_of_a_division_by_zero() -> None:
    figures = delivery_against_documents(5.0, 100, 0.0, 200, 2)
    assert set(figures) == {"document_ms", "delivery_over_document", "delivery_over_send_documents"}
    assert all(math.isnan(value) for value in figures.values())


def test_the_mail_table_prints_a_dash_for_a_figure_it_does_not_have(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = {key for _label, key, _fmt in MAIL_ROWS if key is not None}
    unlimited = dict.fromkeys(keys, 1.0) | {"rate": 0.0, "mail_prepared": 3, "mail_sent": 3}
    unlimited |= delivery_against_documents(1.0, 3, 0.0, 3, 2)
    limited = unlimited | {"rate": 600.0, **delivery_against_documents(1.0, 3, 0.6, 3, 2)}
    print_mail(3, 2, [unlimited, limited])
    table = capsys.readouterr().out
    (line,) = [row for row in table.splitlines() if row.startswith("| étape documentaire")]
    assert line.endswith("| — | 200.00 |")
    assert "nan" not in table
