"""Print files: one merged, print-ready PDF per run (selection order), plus one PDF per invoice.

Big runs stream. Invoices are drawn in chunks (one reportlab canvas per chunk, so the fonts are
embedded once per chunk, not once per invoice) and every chunk's pages are copied at once into
the merged file by `StreamingPdfWriter`, which keeps only object offsets in memory. Memory
therefore depends on the chunk size, not on the number of invoices.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, TypeVar

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from reportlab.pdfgen.canvas import Canvas

from postier.documents.bills_of_exchange import Bill, bills_of, draw_bills
from postier.documents.invoice_pdf import draw_invoice, render_invoice
from postier.documents.layout import new_canvas
from postier.domain.models import Invoice, Seller

DEFAULT_CHUNK = 100
T = TypeVar("T")


@dataclass(frozen=True)
class PrintFileSummary:
    """What a print run produced (small: safe to pass between tasks)."""

    path: str
    pages: int
    invoices: int
    parts_dir: str | None = None


class StreamingPdfWriter:
    """Concatenate the pages of many PDFs into one file, writing objects as they come."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._offsets: list[int] = [0, 0, 0]  # 1 = catalog, 2 = page tree, written at close
        self._kids: list[int] = []
        self._position = 0
        self._write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    @property
    def pages(self) -> int:
        return len(self._kids)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._position += len(data)

    def _allocate(self) -> int:
        self._offsets.append(0)
        return len(self._offsets) - 1

    def _write_object(self, number: int, obj: generic.PdfObject) -> None:
        self._offsets[number] = self._position
        buffer = io.BytesIO()
        buffer.write(b"%d 0 obj\n" % number)
        obj.write_to_stream(buffer, None)
        buffer.write(b"\nendobj\n")
        self._write(buffer.getvalue())

    def append(self, pdf: bytes) -> int:
        """Copy every page of `pdf` (and what they use); return the number of pages added."""
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        numbers: dict[tuple[int, int], int] = {}
        pending: list[tuple[int, generic.PdfObject]] = []

        def remap(obj: generic.PdfObject) -> generic.PdfObject:
            if isinstance(obj, generic.IndirectObject):
                key = (obj.idnum, obj.generation)
                if key not in numbers:
                    numbers[key] = self._allocate()
                    pending.append((numbers[key], obj.get_object()))
                return generic.IndirectObject(numbers[key], 0, None)
            if isinstance(obj, generic.StreamObject):
                copy = generic.StreamObject(
                    {k: remap(obj.raw_get(k)) for k in obj if k != "/Length"},
                    encoded_data=obj.encoded_data,
                )
                return copy
            if isinstance(obj, generic.DictionaryObject):
                return generic.DictionaryObject({k: remap(obj.raw_get(k)) for k in obj})
            if isinstance(obj, generic.ArrayObject):
                return generic.ArrayObject([remap(obj.raw_get(i)) for i in range(len(obj))])
            return obj

        added = 0
        for page, inherited in _pages(reader.root["/Pages"], {}):
            number = self._allocate()
            copy = generic.DictionaryObject(
                {k: remap(page.raw_get(k)) for k in page if k not in ("/Parent", "/Annots")}
            )
            for key, value in inherited.items():
                if key not in copy:
                    copy[generic.NameObject(key)] = remap(value)
            copy[generic.NameObject("/Parent")] = generic.IndirectObject(2, 0, None)
            self._write_object(number, copy)
            self._kids.append(number)
            added += 1
            while pending:
                target, source = pending.pop()
                self._write_object(target, remap(source))
        return added

    def close(self) -> None:
        kids = " ".join(f"{kid} 0 R" for kid in self._kids)
        self._offsets[2] = self._position
        self._write(
            f"2 0 obj\n<< /Type /Pages /Count {self.pages} /Kids [{kids}] >>\nendobj\n".encode()
        )
        self._offsets[1] = self._position
        self._write(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
        xref_at = self._position
        lines = [f"xref\n0 {len(self._offsets)}\n0000000000 65535 f \n"]
        lines += [f"{offset:010d} 00000 n \n" for offset in self._offsets[1:]]
        self._write("".join(lines).encode())
        self._write(
            f"trailer\n<< /Size {len(self._offsets)} /Root 1 0 R >>\n"
            f"startxref\n{xref_at}\n%%EOF\n".encode()
        )


_INHERITABLE = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")


def _pages(
    node: generic.DictionaryObject, inherited: dict[str, generic.PdfObject]
) -> Iterator[tuple[generic.DictionaryObject, dict[str, generic.PdfObject]]]:
    here = {**inherited, **{k: node.raw_get(k) for k in _INHERITABLE if k in node}}
    if node.get("/Type") == "/Pages":
        for kid in node["/Kids"]:
            yield from _pages(kid.get_object(), here)
    else:
        yield node, inherited


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _render_chunk(draw: Callable[[Canvas], int], *, title: str, author: str) -> bytes:
    buffer = io.BytesIO()
    canvas = new_canvas(buffer, title=title, author=author, subject=title)
    draw(canvas)
    canvas.save()
    return buffer.getvalue()


def _bills_drawer(bills: list[Bill], seller: Seller) -> Callable[[Canvas], int]:
    def draw(canvas: Canvas) -> int:
        return draw_bills(canvas, bills, seller)

    return draw


def _safe_name(number: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in number) or "facture"


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_print_file(
    invoices: Iterable[Invoice],
    seller: Seller,
    out_path: str | Path,
    *,
    preview: bool = False,
    parts_dir: str | Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> PrintFileSummary:
    """Render the invoices (an iterator is fine) into one merged print file, in order.

    With `parts_dir`, each invoice's own PDF is written there too (`<number>.pdf`). The file
    appears under its final name only once complete.
    """
    out = Path(out_path)
    parts = Path(parts_dir) if parts_dir is not None else None
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".part")
    with temporary.open("wb") as handle:
        pages, count = write_print_stream(
            invoices, seller, handle, preview=preview, parts=parts, chunk_size=chunk_size
        )
    os.replace(temporary, out)
    return PrintFileSummary(str(out), pages, count, str(parts) if parts else None)


def write_print_stream(
    invoices: Iterable[Invoice],
    seller: Seller,
    handle: IO[bytes],
    *,
    preview: bool = False,
    parts: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[int, int]:
    """The merged print file of the invoices, written into `handle`; (pages, invoices)."""
    count = 0
    writer = StreamingPdfWriter(handle)
    for chunk in _chunks(invoices, chunk_size):
        if parts is not None:
            for invoice in chunk:
                _atomic_write(
                    parts / f"{_safe_name(invoice.number)}.pdf",
                    render_invoice(invoice, seller, preview=preview),
                )

        def draw(canvas: Canvas, chunk: list[Invoice] = chunk) -> int:
            return sum(draw_invoice(canvas, inv, seller, preview=preview) for inv in chunk)

        writer.append(_render_chunk(draw, title="Impression des factures", author=seller.name))
        count += len(chunk)
    writer.close()
    return writer.pages, count


def write_bills_print_file(
    invoices: Iterable[Invoice],
    seller: Seller,
    out_path: str | Path,
    *,
    parts_dir: str | Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> PrintFileSummary:
    """The bills of exchange of the invoices (LCR / BOR only), three per page, in order.

    Any other payment mode is refused (DocumentError) before anything is written for it.
    """
    out = Path(out_path)
    parts = Path(parts_dir) if parts_dir is not None else None
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".part")
    try:
        with temporary.open("wb") as handle:
            pages, count = write_bills_print_stream(
                invoices, seller, handle, parts=parts, chunk_size=chunk_size
            )
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, out)
    return PrintFileSummary(str(out), pages, count, str(parts) if parts else None)


def write_bills_print_stream(
    invoices: Iterable[Invoice],
    seller: Seller,
    handle: IO[bytes],
    *,
    parts: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[int, int]:
    """The bills of exchange print file, written into `handle`; (pages, invoices)."""
    count = 0
    writer = StreamingPdfWriter(handle)
    for chunk in _chunks(invoices, chunk_size):
        bills: list[Bill] = []
        for invoice in chunk:
            own = bills_of(invoice)
            bills.extend(own)
            if parts is not None:
                _atomic_write(
                    parts / f"traites-{_safe_name(invoice.number)}.pdf",
                    _render_chunk(
                        _bills_drawer(own, seller),
                        title=f"Traites {invoice.number}",
                        author=seller.name,
                    ),
                )

        def draw(canvas: Canvas, bills: list[Bill] = bills) -> int:
            return draw_bills(canvas, bills, seller)

        writer.append(_render_chunk(draw, title="Traites", author=seller.name))
        count += len(chunk)
    writer.close()
    return writer.pages, count
