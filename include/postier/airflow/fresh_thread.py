"""Run a task's work on a thread of its own, at the bottom of a fresh Python stack.

CPython 3.11 keeps a thread's frames on a stack of 16 KiB blocks and frees a block as soon as
the frame that needed it returns: a hot call whose frame crosses a block's end maps, faults and
unmaps a block at every call (CPython gh-142183, fixed in 3.13). Where a chunk's hot calls fall
depends on how deep the executor called the task (54 frames under the LocalExecutor, 68 under a
Celery worker): on Celery it cost ≈ 20 % more CPU for the same chunks. A new thread's frames
start at the bottom of a new stack, so the work runs at the same depth whatever started the
task process (docs/performance-notes.md).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

#: How long the task waits, once interrupted (execution timeout, Ctrl-C), for its work to be
#: interrupted too and roll its transaction back; past it the process ends with the thread.
INTERRUPT_GRACE_S = 5.0


def run_on_fresh_thread(work: Callable[[], _T], name: str) -> _T:
    """`work()` on a new thread, its outcome here: its result, or its exception raised again
    with its own traceback.

    The thread runs in a copy of this thread's context (Airflow's task identifiers bound to
    the log lines, connections it may have preset). A signal handled here while waiting
    (Airflow's execution timeout raises from its SIGALRM handler, Ctrl-C) is raised in the work
    as well, as it was when the work ran on this thread: its open transaction is rolled back,
    nothing it had not committed is committed. The thread is a daemon: a process ending
    without it (a worker stuck in a C call past INTERRUPT_GRACE_S) does not wait for it."""
    context = contextvars.copy_context()
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, context.run(work)))
        except BaseException as error:  # handed to the task's thread, which raises it
            outcome.append((False, error))
        finally:
            done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    # Not `thread.join()`: on Python 3.11 a join interrupted by a signal handler's exception
    # marks a thread still running as stopped (bpo-45274's fix).
    try:
        done.wait()
    except BaseException as interruption:
        if not done.is_set():
            # Known window, left as is: the error lands at the work's next bytecode, which
            # may fall between a lock's `acquire()` and the `try` that releases it (e.g.
            # `logging.Handler.handle`); that lock then stays held, and a log line of this
            # thread through the same handler would hang. No clean fix here: interrupting
            # only at safe points needs the work's cooperation (a cancel checked before its
            # commit), not an asynchronous exception.
            _raise_in(thread, type(interruption))
            done.wait(INTERRUPT_GRACE_S)
        raise
    thread.join()
    ok, value = outcome.pop()
    if not ok:
        assert isinstance(value, BaseException)
        try:
            raise value
        finally:
            del value
    return value  # type: ignore[return-value]


def _raise_in(thread: threading.Thread, error: type[BaseException]) -> None:
    """Raise `error` in `thread` at its next Python instruction (a C call it is in finishes
    first)."""
    import ctypes

    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(error)
        )
