"""S3 unreachable: a job retries with backoff, then fails `storage_unavailable` with its input kept; /readyz says
not ready while the API cannot reach S3. The worker and the API each reach moto's S3 server through a TCP proxy
of their own that the test switches off."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import free_port, spawn, stop, wait_for
from tests.reliability.conftest import TcpProxy

CREDENTIALS = {"aws_access_key_id": "k", "aws_secret_access_key": "s", "region_name": "us-east-1"}
BUCKET = "reliability"
STORAGE_ATTEMPTS = 4


@pytest.fixture
def moto_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "s3.log"
    process = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    wait_for(f"http://127.0.0.1:{port}/moto-api/", {log: process})
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield port
    stop(process)


def png_32() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 40)).save(out, "PNG")
    return out.getvalue()


def wait_final(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := http.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_an_unreachable_store_is_retried_then_storage_unavailable_and_readyz_says_so(
    own_redis, deploy, moto_port
):
    s3 = {
        "storage_backend": "s3",
        "s3_bucket": BUCKET,
        "s3_access_key_id": "k",
        "s3_secret_access_key": "s",
        "redis_url": own_redis.url,
    }
    worker_s3, api_s3 = TcpProxy(moto_port), TcpProxy(moto_port)
    worker = deploy(
        **s3,
        s3_endpoint_url=worker_s3.url,
        storage_attempts=STORAGE_ATTEMPTS,
        storage_backoff_s=0.2,
        job_time_limit_s=120,
    )
    worker.start_worker()
    api = deploy(**s3, s3_endpoint_url=api_s3.url)
    http = httpx.Client(base_url=api.start_api(), timeout=30)
    parent = http.post("/generate", json={"seed": 1, "motion_seed": 2, "num_frames": 2}).json()
    assert wait_final(http, parent["id"])["status"] == "succeeded"

    worker_s3.down()
    image = png_32()
    r = http.post("/edit", data={"job_id": parent["id"]}, files={"image": ("paint.png", image, "image/png")})
    assert r.status_code == 202, r.text
    job = wait_final(http, r.json()["id"])

    assert job["status"] == "failed" and job["error"]["code"] == "storage_unavailable", (job, worker.logs())
    assert f"tried {STORAGE_ATTEMPTS} times" in job["error"]["message"]
    assert worker_s3.refused >= STORAGE_ATTEMPTS  # each try reached for the store again
    record = api.jobs.get(job["id"])
    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", **CREDENTIALS)
    assert direct.get_object(Bucket=BUCKET, Key=record.inputs["image"])["Body"].read() == image  # input kept

    api_s3.down()
    r = http.get("/readyz")  # within the client's 30 s timeout
    assert r.status_code == 503 and r.json()["checks"]["storage"].startswith("unavailable"), r.json()
    api_s3.up()
    worker_s3.up()
    assert http.get("/readyz").status_code == 200

    again = http.post(
        "/edit", data={"job_id": parent["id"]}, files={"image": ("paint.png", image, "image/png")}
    )
    assert wait_final(http, again.json()["id"])["status"] == "succeeded"
    http.close()
    worker_s3.close()
    api_s3.close()
