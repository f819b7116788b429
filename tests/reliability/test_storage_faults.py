"""S3 taken away in the middle of running jobs: the upload is retried with backoff; S3 back within the retry window,
the job succeeds with one set of artifacts; not back, it fails `storage_unavailable` with its input kept. /readyz
says not ready while the API cannot reach S3. The worker and the API each reach moto's S3 server through a TCP
proxy of their own that the test switches off."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from core.jobs import JobRecord
from tests.e2e.conftest import free_port, spawn, stop, wait_for
from tests.reliability.conftest import Deployment, TcpProxy
from tests.worker.video_checks import vp8_webm

CREDENTIALS = {"aws_access_key_id": "k", "aws_secret_access_key": "s", "region_name": "us-east-1"}
BUCKET = "reliability"
STORAGE_ATTEMPTS = 5
BACKOFF_S = 0.5  # tries 0.5 + 1 + 2 + 4 s apart: 7.5 s of retry window


@pytest.fixture
def moto_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "s3.log"
    process = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    wait_for(f"http://127.0.0.1:{port}/moto-api/", {log: process})
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield port
    stop(process)


def wait_final(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := http.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def wait_until(deployment: Deployment, job_id: str, ready: Callable[[JobRecord], bool]) -> JobRecord:
    deadline = time.monotonic() + 120
    while not ready(job := deployment.jobs.get(job_id)):
        assert time.monotonic() < deadline, (job, deployment.logs())
        time.sleep(0.01)
    return job


def stored(direct: Any, job_id: str) -> list[str]:
    """The keys under a job's prefix, read from the S3 server directly (no proxy)."""
    listing = direct.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job_id}/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_s3_taken_away_during_the_upload_of_running_jobs_back_in_time_or_not(own_redis, deploy, moto_port):
    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", **CREDENTIALS)
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
        storage_backoff_s=BACKOFF_S,
        job_time_limit_s=120,
    )
    worker.start_worker()
    api = deploy(**s3, s3_endpoint_url=api_s3.url)
    http = httpx.Client(base_url=api.start_api(), timeout=30)

    # 1. Back within the retry window: a generate job (its one use of S3 is the upload) loses S3 once running,
    # sits in its upload stage while the store refuses it, and succeeds when S3 is back: one set of artifacts.
    job_id = http.post("/generate", json={"seed": 1, "motion_seed": 2, "num_frames": 32}).json()["id"]
    wait_until(api, job_id, lambda job: job.status == "running")
    worker_s3.down()
    wait_until(api, job_id, lambda job: job.stage == "uploading" and worker_s3.refused >= 1)
    worker_s3.up()
    job = wait_final(http, job_id)
    assert job["status"] == "succeeded", (job, worker.logs())
    record = api.jobs.get(job_id)
    assert record.attempts == 1
    assert stored(direct, job_id) == sorted(a.key for a in record.artifacts.values())  # the three, once each
    assert len(stored(direct, job_id)) == 3

    # 2. Not back in time: a decompose job (its input and its units' frames are in S3) loses S3 while it fits; the
    # fit of a unit tries the store STORAGE_ATTEMPTS times (to read its frames or write its fit), then the job fails
    # storage_unavailable naming the unit, and its input stays stored.
    refused = worker_s3.refused
    clip = vp8_webm([(16, 8)])
    r = http.post("/decompose", files={"video": ("clip.webm", clip, "video/webm")}, data={"steps": "400"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_until(api, job_id, lambda job: job.stage == "fitting")
    worker_s3.down()
    job = wait_final(http, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "storage_unavailable", (job, worker.logs())
    assert f"tried {STORAGE_ATTEMPTS} times" in job["error"]["message"]
    assert re.match(r"shot \d+ segment 0 \(frames \d+-\d+\): ", job["error"]["message"]), job["error"]
    record = api.jobs.get(job_id)
    assert list(record.stage_started_at)[-1] == "fitting"  # it failed in a unit's fit
    assert worker_s3.refused - refused >= STORAGE_ATTEMPTS  # each try reached for the store again
    # the input kept, no artifact; the units' work files stay while the store is away (docs/DEPLOY.md)
    work = f"jobs/{job_id}/parts/"
    assert [k for k in stored(direct, job_id) if not k.startswith(work)] == [record.inputs["video"]]
    assert direct.get_object(Bucket=BUCKET, Key=record.inputs["video"])["Body"].read() == clip

    api_s3.down()
    r = http.get("/readyz")  # within the client's 30 s timeout
    assert r.status_code == 503 and r.json()["checks"]["storage"].startswith("unavailable"), r.json()
    api_s3.up()
    worker_s3.up()
    assert http.get("/readyz").status_code == 200
    http.close()
    worker_s3.close()
    api_s3.close()
