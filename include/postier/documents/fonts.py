"""Embedded TrueType fonts (DejaVu): PDF/A forbids the non-embedded base-14 fonts, and accents
and the euro sign need a Unicode font."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from postier.errors import ConfigurationError

#: Debian package fonts-dejavu-core; override with POSTIER_FONT_DIR.
DEFAULT_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

REGULAR = "PostierSans"
BOLD = "PostierSans-Bold"
MONO = "PostierMono"

_FILES = {REGULAR: "DejaVuSans.ttf", BOLD: "DejaVuSans-Bold.ttf", MONO: "DejaVuSansMono.ttf"}


@cache
def register_fonts() -> None:
    """Register the fonts with reportlab, once per process."""
    folder = Path(os.environ.get("POSTIER_FONT_DIR", DEFAULT_FONT_DIR))
    for name, filename in _FILES.items():
        path = folder / filename
        if not path.is_file():
            raise ConfigurationError(
                f"Police introuvable : {path} (installer le paquet fonts-dejavu-core "
                "ou définir POSTIER_FONT_DIR)."
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))
    pdfmetrics.registerFontFamily(REGULAR, normal=REGULAR, bold=BOLD)


def text_width(text: str, font: str, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font, size))


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Greedy word wrap to `width` points; a word longer than the width is cut."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, font, size) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while text_width(word, font, size) > width:
            cut = len(word)
            while cut > 1 and text_width(word[:cut], font, size) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current or not lines:
        lines.append(current)
    return lines
