"""Page geometry shared by the documents (points, A4 portrait) and the canvas factory."""

from __future__ import annotations

from typing import BinaryIO

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from postier.documents.fonts import REGULAR, register_fonts

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 42.0
LEFT = MARGIN
RIGHT = PAGE_WIDTH - MARGIN
CONTENT_WIDTH = RIGHT - LEFT

PRODUCER = "Postier (ReportLab)"


def new_canvas(
    out: str | BinaryIO,
    *,
    title: str,
    author: str,
    subject: str,
    keywords: str = "",
) -> Canvas:
    """A compressed A4 canvas whose default font is an embedded one (never Helvetica)."""
    register_fonts()
    canvas = Canvas(
        out,
        pagesize=A4,
        pageCompression=1,
        initialFontName=REGULAR,
        initialFontSize=9,
    )
    canvas.setTitle(title)
    canvas.setAuthor(author)
    canvas.setSubject(subject)
    canvas.setKeywords(keywords)
    canvas.setCreator(PRODUCER)
    canvas.setProducer(PRODUCER)
    return canvas


def draw_watermark(canvas: Canvas, text: str, font: str) -> None:
    """Big light diagonal text, drawn first so the page content stays readable over it."""
    canvas.saveState()
    canvas.setFillGray(0.82)
    canvas.setFont(font, 110)
    canvas.translate(PAGE_WIDTH / 2, PAGE_HEIGHT / 2)
    canvas.rotate(45)
    canvas.drawCentredString(0, -38, text)
    canvas.restoreState()
