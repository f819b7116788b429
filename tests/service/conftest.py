"""A real API over HTTP (uvicorn in a thread on a free loopback port), the machine's Redis (db 11, flushed before
each test) and moto's S3 server over HTTP (tests/conftest.py). No worker runs here: jobs stay queued unless a test plays the worker's
part through the JobStore the worker uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.redis_server import redis_url
from tests.service.helpers import REDIS_DB, Server, make_settings


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(REDIS_DB), decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def server(redis_db: redis.Redis, tmp_path: Path) -> Iterator[Server]:
    with Server(make_settings(tmp_path)) as s:
        yield s


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def finished_job(server: Server, http: httpx.Client) -> dict:
    """A generate job that a (pretend) worker has finished: the document as GET /jobs/{id} returns it."""
    job = http.post("/generate", json={"seed": 3, "motion_seed": 4, "fps": 12}).json()
    server.finish(job["id"])
    return http.get(f"/jobs/{job['id']}").json()
