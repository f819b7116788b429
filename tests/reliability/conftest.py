"""Fault tests: each test starts its own redis-server (append-only file, on a free port: tests/redis_server.py), its own Celery workers and API processes, and breaks them on purpose."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from core.jobs import JobRecord, JobStore, connect_redis
from core.queues import live_workers, make_celery
from core.settings import Settings
from service import embedded
from tests.e2e.conftest import free_port, spawn, stop, wait_for
from tests.redis_server import RedisServer

TERMINAL = ("succeeded", "failed", "canceled")


class TcpProxy:
    """A TCP forwarder in front of a server; ``down()`` makes the server unreachable for whoever uses the proxy
    (open connections are cut, new ones reset at once and counted in ``refused``) until ``up()``."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.is_up = True
        self.refused = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            if not self.is_up:
                self.refused += 1
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )  # RST
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.is_up = False
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def up(self) -> None:
        self.is_up = True

    def close(self) -> None:
        self.down()
        self.listener.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder, persist=True)
    server.start()
    yield server
    if server.process.poll() is None:
        stop(server.process)


class Deployment:
    """Workers and APIs (subprocesses) of one test, all with the same GENDEF_* settings."""

    def __init__(self, folder: Path, values: dict):
        self.folder = folder
        self.settings = Settings(**values)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
        self.env |= {f"GENDEF_{key.upper()}": str(value) for key, value in values.items()}
        self.processes: list[subprocess.Popen] = []
        self.jobs = JobStore(connect_redis(self.settings), ttl_s=600)

    def start_worker(self) -> psutil.Process:
        """A worker (concurrency 1) that answers pings; returned as a psutil.Process of its main process."""
        name = f"worker-{len(self.processes)}-{free_port()}"
        log = self.folder / f"{name}.log"
        process = spawn(
            embedded.worker_args(f"{name}@localhost"),
            log,
            env=self.env,
            cwd=self.folder,
        )
        self.processes.append(process)
        deadline = time.monotonic() + 90
        while f"{name}@localhost" not in live_workers(make_celery(self.settings), timeout_s=0.5):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        return psutil.Process(process.pid)

    def start_api(self) -> str:
        port = free_port()
        log = self.folder / f"api-{port}.log"
        process = spawn(
            embedded.api_args(port),
            log,
            env=self.env,
            cwd=self.folder,
        )
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/healthz", {log: process})
        return url

    def wait(
        self, job_id: str, timeout_s: float = 120, on_poll: Callable[[JobRecord], None] | None = None
    ) -> JobRecord:
        """Poll the job record until it is final (``on_poll(record)`` at each poll)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.jobs.get(job_id)
            if job is not None and job.status in TERMINAL:
                return job
            if on_poll and job is not None:
                on_poll(job)
            assert time.monotonic() < deadline, (job, self.logs())
            time.sleep(0.05)

    def wait_for_status(self, job_id: str, status: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while (job := self.jobs.get(job_id)) is None or job.status != status:
            assert time.monotonic() < deadline, (job, self.logs())
            time.sleep(0.02)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        """Stop every process and its children (a pool process may be stuck on purpose)."""
        for process in self.processes:
            if process.poll() is None:
                children = psutil.Process(process.pid).children(recursive=True)
                stop(process)
                for child in children:
                    if child.is_running():
                        child.kill()


@pytest.fixture
def deploy(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Callable[..., Deployment]]:
    """deploy(**settings) -> a Deployment with the tiny checkpoint on CPU, local storage in tmp_path."""
    made: list[Deployment] = []

    def make(**overrides) -> Deployment:
        folder = tmp_path / f"deployment-{len(made)}"
        folder.mkdir()
        values = (
            dict(
                local_storage_dir=tmp_path / "artifacts",
                models_dir=tiny_checkpoint.parent,
                device="cpu",
                readiness_cache_s=0,
                url_secret="x" * 32,
            )
            | overrides
        )
        made.append(Deployment(folder, values))
        return made[-1]

    yield make
    for deployment in made:
        deployment.stop()
