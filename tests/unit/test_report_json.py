"""rapport.json is written member by member, a run's lists of invoices read one element at a
time from the run's row (`write_json`'s `streamed`), with the bytes `json.dumps` gives the whole
report: the run page, the Chorus and PA code and the clerk's downloads read that text."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from postier.pipeline.reports import JSON_BATCH, JSON_WRITE_CHARS, write_json

#: Text a report carries: accents, a line break, a tab, quotes, a backslash, U+2028, an emoji.
AWKWARD = 'Dupont & Fils « SARL »\nligne 2\t"cité" \\ \u2028 fin 🧾'


def _report(anomalies: list[dict[str, Any]], remarks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "execution": 7,
        "libelle": "Préparer l'envoi des factures",
        "duree_s": 1.5,
        "criteres": {"clients": ["C1", AWKWARD], "vide": {}, "aucun": None, "oui": True},
        "compteurs": {"selectionnees": 3, "refusees": 1},
        "anomalies": anomalies,
        "remarques": remarks,
        "montant": Decimal("12.50"),  # written as json.dumps's `default=str` writes it
        "fichiers": [],
        "courriels": {"anomalies": [], "en_attente": 0},
    }


def _streamed(elements: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The elements one at a time, as the run's row gives them: no length, no indexing."""
    yield from elements


def _written(report: dict[str, Any], lists: dict[str, list[dict[str, Any]]]) -> bytes:
    handle = io.BytesIO()
    write_json(handle, report, {key: _streamed(value) for key, value in lists.items()})
    return handle.getvalue()


def test_streamed_lists_give_the_bytes_of_the_whole_report() -> None:
    anomalies = [
        {"facture": f"FA-{n:05}", "statut": "refusée", "motif": f"{AWKWARD} {n}"}
        for n in range(2_000)
    ]
    remarks = [{"facture": "FA-1", "remarque": AWKWARD}]
    whole = _report(anomalies, remarks)
    expected = json.dumps(whole, ensure_ascii=False, indent=2, default=str).encode()
    # The report as written in the run's row: its lists empty, read from the row instead.
    written = _written(_report([], []), {"anomalies": anomalies, "remarques": remarks})
    assert written == expected
    assert json.loads(written)["anomalies"][1999]["motif"] == f"{AWKWARD} 1999"
    assert len(written) > 2 * JSON_WRITE_CHARS  # several pieces


def test_empty_streamed_lists_and_plain_reports_keep_their_bytes() -> None:
    whole = _report([], [])
    expected = json.dumps(whole, ensure_ascii=False, indent=2, default=str).encode()
    assert _written(_report([], []), {"anomalies": [], "remarques": []}) == expected
    # A list of exactly one batch, elements with an empty member.
    batch = [{"facture": str(n), "motif": "", "vide": {}} for n in range(JSON_BATCH)]
    whole = _report(batch, [])
    assert (
        _written(_report([], []), {"anomalies": batch})
        == json.dumps(whole, ensure_ascii=False, indent=2, default=str).encode()
    )
    assert _written(_report([], []), {}) == expected
    assert _written({}, {}) == b"{}"
