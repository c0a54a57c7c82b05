"""A chunk's wait for a core, read from the kernel's schedstat of its thread: 0 where the kernel
(another system, a container without it) does not say, never an error in the chunk."""

from __future__ import annotations

import io
from typing import Any

import pytest

from postier.pipeline import runs


def test_the_run_queue_is_the_second_schedstat_figure_in_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        runs, "open", lambda *_a, **_k: io.BytesIO(b"9 1500000000 7\n"), raising=False
    )
    assert runs._run_queue_s() == 1.5


@pytest.mark.parametrize(
    "schedstat",
    [FileNotFoundError(2, "No such file"), PermissionError(13, "denied"), b"", b"12 x 3\n"],
    ids=["absent", "refused", "empty", "garbled"],
)
def test_the_run_queue_is_0_where_the_kernel_does_not_say_it(
    monkeypatch: pytest.MonkeyPatch, schedstat: Any
) -> None:
    def fake_open(*_args: Any, **_kwargs: Any) -> io.BytesIO:
        if isinstance(schedstat, Exception):
            raise schedstat
        return io.BytesIO(schedstat)

    monkeypatch.setattr(runs, "open", fake_open, raising=False)
    assert runs._run_queue_s() == 0.0
