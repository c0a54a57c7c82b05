"""A task's executor slot is freed as soon as its task process ends: Airflow's supervisor, its
task process's sockets all closed, waits on the process itself instead of sleeping its whole
wait (`postier.airflow.task_exit`)."""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
import weakref
from typing import Any

import psutil
import pytest
import structlog
from airflow.sdk.execution_time import supervisor
from airflow.sdk.execution_time.supervisor import (
    ActivitySubprocess,
    PsutilTracker,
    WatchedSubprocess,
)

from postier.airflow.task_exit import wait_for_exit, wait_for_task_exit


def ending_task(process: subprocess.Popen[bytes]) -> ActivitySubprocess:
    """What Airflow's supervisor holds of a task process whose sockets are all closed (at EOF):
    its pid, no open socket, no exit code yet; reaped by Airflow's own `_check_subprocess_exit`.
    Airflow's own class, slotted, with only what its wait reads set: a field an upgrade renames
    fails here rather than silently turning the wrapper off."""
    task: ActivitySubprocess = object.__new__(ActivitySubprocess)
    task.pid = process.pid
    task._process = PsutilTracker(psutil.Process(process.pid))
    task._exit_code = None
    task._process_exit_monotonic = None
    task._open_sockets = weakref.WeakKeyDictionary()
    task.selector = selectors.DefaultSelector()
    # No heartbeat due (none sent: no API server), the task not yet reported done.
    task._last_successful_heartbeat = task._last_heartbeat_attempt = time.monotonic()
    task._terminal_state = None
    return task


def child(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


@pytest.fixture
def supervisor_waits_for_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow's method put back after the test, whatever the wrapper did to it.
    monkeypatch.setattr(
        WatchedSubprocess, "_service_subprocess", WatchedSubprocess._service_subprocess
    )
    assert wait_for_task_exit()


@pytest.mark.usefixtures("supervisor_waits_for_exit")
def test_the_supervisor_sees_its_task_end_when_it_ends_not_after_its_wait() -> None:
    process = child(0.3)
    task = ending_task(process)
    started = time.monotonic()
    try:
        # Airflow's own loop, which waits up to `min_heartbeat_interval` (1 s at least) here:
        # 5 s to tell the two apart on a loaded machine.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(supervisor, "MIN_HEARTBEAT_INTERVAL", 5)
            task._monitor_subprocess()
    finally:
        process.kill()
        process.wait()
    elapsed = time.monotonic() - started

    assert task._exit_code == 0
    assert elapsed < 2.5, f"the supervisor slept {elapsed:.2f} s after its task ended"


@pytest.mark.usefixtures("supervisor_waits_for_exit")
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no pidfd"])
def test_a_task_still_running_is_waited_for_no_longer_than_before(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:

        def no_pidfd(pid: int, flags: int = 0) -> int:
            # Out of descriptors (psutil, reaping for Airflow, then waits without one too); a
            # kernel before 5.3 or a sandbox refuse every pidfd.
            raise OSError(errno.EMFILE, "pidfd_open")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    process = child(30)
    task = ending_task(process)
    started = time.monotonic()
    try:
        exit_code = task._service_subprocess(max_wait_time=0.5)
    finally:
        process.kill()
        process.wait()
    elapsed = time.monotonic() - started

    # Still running: the supervisor's loop gets back in time for its heartbeat, after Airflow's
    # whole wait (without a pidfd, not its loop spun every 10 ms while the process lingers).
    assert exit_code is None
    assert 0.4 <= elapsed < 3.0


#: A re-executed task process (`run_as_user`): its stdin is Airflow's request socket, on which it
#: asks for a new log channel (`ResendLoggingFD`) and receives it (`_send_new_log_fd`); it logs
#: a line on it a moment later, then goes on running.
REEXECUTED_TASK = """
import socket, sys, time
requests = socket.socket(fileno=0)
_, fds, _, _ = socket.recv_fds(requests, 65536, 1)
logs = socket.socket(fileno=fds[0])
time.sleep(float(sys.argv[1]))
logs.sendall(b'{"event": "ligne du journal de la tache", "level": "info"}\\n')
time.sleep(30)
"""


@pytest.mark.usefixtures("supervisor_waits_for_exit")
def test_a_reexecuted_tasks_log_channel_is_read_as_its_logs_come() -> None:
    requests, child_requests = socket.socketpair()
    process = subprocess.Popen([sys.executable, "-c", REEXECUTED_TASK, "0.3"], stdin=child_requests)
    child_requests.close()
    task = ending_task(process)
    logged: list[str] = []

    def keep(_: object, __: str, event: dict[str, Any]) -> dict[str, Any]:
        logged.append(event["event"])
        raise structlog.DropEvent

    task.process_log = structlog.wrap_logger(None, processors=[keep])
    task.subprocess_logs_to_stdout = False
    task.stdin = requests
    try:
        # Airflow's own handling of the request: the new channel, outside `_open_sockets`.
        task._send_new_log_fd(req_id=1)
        assert not task._open_sockets and len(task.selector.get_map()) == 1
        started = time.monotonic()
        # Airflow's select wakes for the line; the wrapper's wait on the process (still
        # running) must too, not read the line once the process has ended or the wait is over.
        while not logged and time.monotonic() - started < 10:
            assert task._service_subprocess(max_wait_time=5.0) is None
        elapsed = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
        requests.close()

    assert logged == ["ligne du journal de la tache"]
    assert elapsed < 2.5, f"the task's log line was read {elapsed:.2f} s after the wait began"


def test_wrapping_twice_wraps_once(supervisor_waits_for_exit: None) -> None:
    wrapped = WatchedSubprocess._service_subprocess

    assert wait_for_task_exit()
    assert WatchedSubprocess._service_subprocess is wrapped


def test_a_process_that_cannot_be_watched_is_not_waited_for() -> None:
    process = child(0)
    process.wait()  # reaped: no pidfd can be opened on it any more
    started = time.monotonic()

    assert wait_for_exit(process.pid, 5.0) is False
    assert time.monotonic() - started < 2.0


def test_a_pidfd_numbered_past_1023_is_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    # select() refuses a descriptor past FD_SETSIZE (1024): a supervisor holding many files
    # would fail its task instead of waiting.
    high = 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= high:
        pytest.skip(f"at most {hard} descriptors")
    real = os.pidfd_open

    def numbered_high(pid: int, flags: int = 0) -> int:
        fd = real(pid, flags)
        try:
            return os.dup2(fd, high, inheritable=False)
        finally:
            os.close(fd)

    monkeypatch.setattr(os, "pidfd_open", numbered_high)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, high + 1), hard))
    process = child(0.3)
    started = time.monotonic()
    try:
        assert wait_for_exit(process.pid, 5.0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        process.kill()
        process.wait()

    assert time.monotonic() - started < 2.5
