"""Bounds on what Postier reads from outside: past them a file or an answer is refused unread.

A Chorus Pro return file (`chorus_returns`), a lifecycle file of the Plateforme Agréée
(`lifecycle`) and every answer of the PA's APIs (`postier.delivery.plateforme`) are a few
kilobytes; anything near these bounds is broken or hostile.
"""

from __future__ import annotations

#: The most bytes of one received file or API answer.
MAX_FILE_SIZE = 10 * 1024 * 1024
