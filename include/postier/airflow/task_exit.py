"""A task's executor slot freed as soon as its task process ends.

Airflow's task supervisor (`airflow.sdk.execution_time.supervisor`, in a LocalExecutor worker
or a Celery pool process) reads its task process's sockets until they close, then reaps the
process. The task process closes its sockets just before its `os._exit`, and the kernel then
takes a moment more to end it (tearing down its memory: a preloaded task process maps ≈ 200
MiB): when the supervisor checks in that instant, it finds the process still running and, with
no socket left to wait on, sleeps its whole wait (`[workers] min_heartbeat_interval`, 1 s at
least) before checking again. The executor slot stays held meanwhile, and a task waiting for it
starts up to 1 s later: a send's second chunk task, queued when its confirmation ends
(docs/performance-notes.md).

`wait_for_task_exit()` makes that wait end when the process ends: once the task process's sockets
are all closed, the supervisor waits on the process itself (a pidfd, Linux ≥ 5.3), for no longer
than it would have slept; then Airflow's own code reaps it as before. Without pidfds, or for a
process that is not a child (Airflow's in-process test supervisor), Airflow's wait is unchanged.
That wait also ends as soon as a socket the supervisor still reads has something for it: a task
process that re-executes itself (`run_as_user`: `sudo`, then a new interpreter) asks for a new
log channel, which Airflow watches outside `_open_sockets` (`_send_new_log_fd`); its logs are
read as they come, as Airflow's own wait would, not once the process has ended.
"""

from __future__ import annotations

import functools
import os
import select
from collections.abc import Iterable
from typing import Any

#: Marks Airflow's method once wrapped, so that a second call wraps nothing.
_WRAPPED = "_postier_waits_for_task_exit"


def wait_for_exit(pid: int, timeout: float, readable: Iterable[int] = ()) -> bool:
    """Return True when process `pid` has ended (not reaped: its parent does that), when one of
    the descriptors `readable` has something to read (or is closed at the other end), or after
    `timeout` seconds; False at once when it cannot be watched (gone, or no pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        # poll, not select: a supervisor's descriptor numbered past 1023 is not refused.
        watch = select.poll()
        for watched in (fd, *readable):
            watch.register(watched, select.POLLIN)
        watch.poll(timeout * 1000)
    finally:
        os.close(fd)
    return True


def wait_for_task_exit() -> bool:
    """Wrap Airflow's supervisor wait (see the module); True when it is (or was already)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        from airflow.sdk.execution_time.supervisor import WatchedSubprocess
    except ImportError:
        return False
    service = getattr(WatchedSubprocess, "_service_subprocess", None)
    if service is None:
        return False
    if getattr(service, _WRAPPED, False):
        return True

    @functools.wraps(service)
    def service_subprocess(self: Any, max_wait_time: float, *args: Any, **kwargs: Any) -> Any:
        pid = getattr(self, "pid", None)
        if (
            getattr(self, "_exit_code", 0) is None
            and not getattr(self, "_open_sockets", True)
            and isinstance(pid, int)
            and pid != os.getpid()
        ):
            # Every socket closed, the process not yet reaped: it is ending. Not watched (no
            # pidfd: an old kernel, a sandbox), Airflow's wait as it was, not a 10 ms spin. What
            # Airflow's selector still reads (a re-executed task's log channel, registered
            # outside `_open_sockets`) ends the wait too, as it ends Airflow's: read at once.
            selector = getattr(self, "selector", None)
            watched = selector.get_map() if selector is not None else None
            readable = [key.fd for key in watched.values()] if watched else []
            if wait_for_exit(pid, max(0.01, max_wait_time), readable):
                max_wait_time = 0.0
        return service(self, max_wait_time, *args, **kwargs)

    setattr(service_subprocess, _WRAPPED, True)
    WatchedSubprocess._service_subprocess = service_subprocess  # type: ignore[method-assign]
    return True
