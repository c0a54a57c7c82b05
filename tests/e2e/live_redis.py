"""A real Redis (Debian's `redis-server`) on a free loopback port: the Celery broker of the tests.

Started like the test PostgreSQL and sshd: in the foreground, in a folder of its own (its log),
nothing saved to disk, a password generated for the run and passed on standard input (never in a
file nor on the command line). As root it runs as the `redis` user the Debian package creates
(never as root): the folder's parents must let that user through (mode 0755, as for PostgreSQL).
No pytest here: `bench/` reuses it too.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from postier.store.cluster import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STARTUP_SECONDS = 15.0


@dataclass
class RedisServer:
    base: Path
    port: int
    password: str = field(repr=False)
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The broker URL, database 0 (carries the password: never log it)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def log(self) -> str:
        path = self.base / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _run_as() -> str | None:
    """`redis` as root (the Debian package's user); else whoever runs the tests."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("redis")
    except KeyError:
        raise RuntimeError("root without the `redis` user: install redis-server") from None
    return "redis"


def start_redis(base: Path) -> RedisServer:
    if not Path(REDIS_SERVER).exists():
        raise RuntimeError("redis-server absent: install it (make system-deps)")
    base.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    port, password = free_port(), secrets.token_urlsafe(24)
    config = "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            f"dir {base}",
            'save ""',
            "appendonly no",
            f"requirepass {password}",
            "",
        ]
    )
    if user:
        shutil.chown(base, user, user)
    with (base / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            [REDIS_SERVER, "-"],  # the configuration on standard input
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            user=user,
            cwd=base,
            start_new_session=True,
        )
    assert process.stdin is not None
    process.stdin.write(config.encode())
    process.stdin.close()
    server = RedisServer(base=base, port=port, password=password, process=process)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start:\n{server.log()}")
        try:
            if server.client().ping():
                return server
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            stop_redis(server)
            raise RuntimeError(f"redis-server not ready after {STARTUP_SECONDS} s:\n{server.log()}")
        time.sleep(0.05)


def stop_redis(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
