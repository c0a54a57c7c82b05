"""Files a run produces, written so that a crash never leaves a half-written one behind."""

from __future__ import annotations

from pathlib import Path


def write_atomically(path: Path, data: bytes) -> str:
    """Write `data` under a temporary name, then rename it into place; the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return str(path)
