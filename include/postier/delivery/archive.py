"""The GED: a write-once store of signed PDFs, addressed by URL through fsspec.

A local folder by default (`.postier/ged/`); any fsspec backend (s3://, sftp://…) by configuration.
An `sftp://` GED is opened like the runs' storage: its host key (`POSTIER_GED_HOST_KEY` or the
`postier_ged` connection's extra `host_key`) is checked on every connection, never trusted on
first use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING

from postier.errors import DeliveryError
from postier.storage import GED, Durability, StorageConfig, WriteBatch, open_place

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


#: Every this many documents put, their write-back begins in the background: the disk writes
#: while the chunk signs the next ones, and the sync before its commit waits for the last ones.
BACKGROUND_SYNC_EVERY = 64


@dataclass(frozen=True)
class Archived:
    location: str
    sha256: str
    size: int


class DocumentArchive:
    def __init__(self, url: str, access: StorageConfig | None = None) -> None:
        """The GED at `url`; `access` carries the host key, private key and options that
        reach it (`POSTIER_GED_HOST_KEY`… by default)."""
        config = access if access is not None else StorageConfig.from_env(place=GED)
        # Connects on first use, and again when the server closed an idle session.
        self._place = open_place(replace(config, url=url.rstrip("/")))
        self.root = self._place.root
        #: What locations start with: the URL as given, but no login or password of an SFTP one.
        self.url = self._place.public
        self._durability: Durability | None = None
        self._unsynced = 0
        #: Documents `add`ed, not yet written.
        self._batch = WriteBatch(self._write, batched=self._place.local)

    @property
    def fs(self) -> AbstractFileSystem:
        return self._place.fs

    @staticmethod
    def key_for(
        invoice_date: date,
        customer_code: str,
        number: str,
        kind: str = "facture",
        version: int = 1,
    ) -> str:
        """Layout year/month/customer/invoice; later versions beside the first (`-v2`…)."""
        suffix = "" if version == 1 else f"-v{version}"
        year, month = invoice_date.year, invoice_date.month
        return f"{year:04d}/{month:02d}/{customer_code}/{number}-{kind}{suffix}.pdf"

    def put(self, key: str, data: bytes, *, replace_unindexed: bool = False) -> Archived:
        """Store `data` under `key`. The same bytes again is a no-op; other bytes are refused,
        unless the caller knows the existing file was never indexed (a rolled-back send)."""
        archived = self._archived(key, data)
        path = self._place.path(key)
        # A send replaces what a rolled-back attempt left: no look before writing.
        if not replace_unindexed and self.fs.exists(path):
            if hashlib.sha256(self.fs.cat_file(path)).hexdigest() == archived.sha256:
                return archived
            raise DeliveryError(f"la GED contient déjà {key} avec un autre contenu : refusé")
        self._write(key, data)
        return archived

    def add(self, key: str, data: bytes) -> Archived:
        """`put(key, data, replace_unindexed=True)`, the file written with the next few
        (`WriteBatch`), at the latest by `sync()`: the caller records it only after."""
        archived = self._archived(key, data)
        self._batch.add(key, data)
        return archived

    def _archived(self, key: str, data: bytes) -> Archived:
        """What `data` stored under `key` will be; a refused name fails here."""
        self._place.path(key)
        return Archived(self._place.location(key), hashlib.sha256(data).hexdigest(), len(data))

    def _write(self, key: str, data: bytes) -> None:
        if self._durability is None:
            self._durability = self._place.durability()
        # Named only once complete (`Storage.put`), its folder made when missing; a French error
        # otherwise.
        self._place.put(self._place.path(key), data, self._place.location(key))
        self._unsynced += 1
        if self._unsynced % BACKGROUND_SYNC_EVERY == 0:
            self._durability.start()

    def sync(self) -> None:
        """Make the documents put since the last sync durable (one syncfs, not one fsync per
        file): the caller records them as archived only after, so a power loss cannot leave
        an invoice recorded as archived whose file is missing. The documents `add`ed are
        written first."""
        self._batch.flush()
        if self._durability is not None:
            durability, self._durability, self._unsynced = self._durability, None, 0
            durability.wait()

    def read(self, location: str) -> bytes:
        """The document at `location`; a French `DeliveryError` when outside this GED, absent
        or unreadable."""
        return self._place.read(location)
