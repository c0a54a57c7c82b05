"""Run reports' Markdown tables show ERP and partner text as written, one row per line.

Read back with the renderer of the run page (`postier.airflow.reports_app`: markdown-it-py,
CommonMark with tables, no raw HTML), as the clerk sees them.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

from postier.pipeline.reports import markdown_table, to_markdown

#: Text an ERP or a partner may send: a pipe, a backslash before a pipe, a line break, a
#: trailing backslash.
AWKWARD = "Dupont | Fils\\|SARL\nligne 2 \\"
SHOWN = "Dupont | Fils\\|SARL ligne 2 \\"


def _rows(markdown: str) -> list[list[str]]:
    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return [
        [html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", rendered, re.S)
        if "<td" in row
    ]


def test_a_table_cell_shows_pipes_backslashes_and_line_breaks_as_one_cell() -> None:
    lines = markdown_table("Statuts", ["Fichier", "Motif"], [["f.xml", AWKWARD], ["g.xml", "ok"]])
    assert _rows("\n".join(lines)) == [["f.xml", SHOWN], ["g.xml", "ok"]]


def test_the_run_report_shows_a_refusal_reason_as_one_cell() -> None:
    report = {
        "libelle": "Envoyer les factures",
        "execution": 7,
        "mode": "imprimer",
        "statut": "terminée avec anomalies",
        "lance_par": "compta",
        "debut": "2026-12-06T08:00:00+01:00",
        "duree_s": 1.0,
        "criteres": {},
        "compteurs": dict.fromkeys(
            ("selectionnees", "traitees", "ignorees", "refusees", "non_traitees"), 1
        ),
        "anomalies": [{"facture": "F|1", "statut": "refusée", "motif": AWKWARD}],
        "remarques": [{"facture": "F2", "remarque": AWKWARD}],
        "fichiers": [],
    }
    rows = _rows(to_markdown(report))
    assert ["F|1", "refusée", SHOWN] in rows
    assert ["F2", SHOWN] in rows
