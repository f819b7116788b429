"""A real API over HTTP (uvicorn in a thread on a free loopback port), the machine's Redis (db 11, flushed before
each test) and moto's S3 server over HTTP. No worker runs here: jobs stay queued unless a test plays the worker's
part through the JobStore the worker uses."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import redis

from tests.redis_server import redis_url
from tests.service.helpers import REDIS_DB, Server, free_port, make_settings


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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a subprocess on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    name = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name
