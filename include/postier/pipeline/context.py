"""What a pipeline step needs at execution time, resolved by the caller (Airflow adapter, CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from postier.store.database import connect


@dataclass(frozen=True)
class Environment:
    """Connections and places, resolved at execution time: never at DAG-parse time."""

    dsn: str
    home: Path
    workers: int = 4
    #: PKCS#12 content and passphrase for signing; None means the local demo key.
    signing_pkcs12: bytes | None = None
    signing_passphrase: bytes | None = None
    timestamp_url: str | None = None
    #: GED location (fsspec URL); the local folder `<home>/ged` when empty.
    ged_url: str = ""

    @property
    def archive_url(self) -> str:
        return self.ged_url or str(self.home / "ged")

    def connect(self) -> psycopg.Connection[Any]:
        return connect(self.dsn)

    def run_dir(self, run_id: int, treatment: str) -> Path:
        path = self.home / "runs" / f"{run_id:06d}-{treatment}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __repr__(self) -> str:  # never print the key or the passphrase
        return f"Environment(home={str(self.home)!r}, workers={self.workers})"
