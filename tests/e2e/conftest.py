"""The production-mode deployment, for real: moto's S3 server over HTTP, the API under uvicorn and a Celery worker,
each in its own subprocess, against the machine's Redis (db 12) and a models folder of two tiny checkpoints. `api_url` is its base
URL.

Two test sessions may run at once (CI and a developer, two developers): each gets queues of its own name, job
records are keyed by random ids and expire after a few minutes, so nothing needs flushing and no session's worker
takes another's jobs. The session deletes its queues when it ends."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import redis
import torch
from celery import Celery

from model.checkpoint import save_checkpoint
from model.config import preset
from model.gendef import GenDeF
from service import embedded
from tests.redis_server import redis_url

REDIS_DB = 12
BUCKET = "gendef-e2e"
S3_CREDENTIALS = {
    "aws_access_key_id": "e2e",
    "aws_secret_access_key": "e2e-secret",
    "region_name": "us-east-1",
}
# Small caps so the oversized and the bomb uploads stay cheap to make; room for a canonical image of a clip
# decomposed at 128 px painted at 4x (a few hundred KiB).
MAX_UPLOAD_BYTES = 1024 * 1024
MAX_UPLOAD_PIXELS = 1024 * 1024
MAX_RENDER_PIXELS = (
    128 * 112
)  # a tiny model's 32 px video at scale 2, not 4; a clip's 128 x 105 frames at scale 1
MAX_RENDER_FRAMES = 24  # 8 frames at fps_factor 2, not 4
STARTUP_TIMEOUT_S = 60
WEBHOOK_SECRET = "e2e-webhook-secret-of-at-least-32-characters"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, processes: dict[Path, subprocess.Popen], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll url until it answers 200; fail with the processes' logs if one dies or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if any(p.poll() is not None for p in processes.values()) or time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {log.name} (exit code {p.poll()}):\n{log.read_text()[-3000:]}"
                for log, p in processes.items()
            )
            pytest.fail(f"{url} did not answer 200\n{logs}")
        time.sleep(0.2)


def spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def e2e_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-logs")


@contextlib.contextmanager
def own_queues() -> Iterator[dict[str, str]]:
    """Celery queue names of one deployment (GENDEF_*_QUEUE), so no other deployment's worker takes its jobs;
    deleted from Redis at the end."""
    session = secrets.token_hex(4)
    names = {
        "GENDEF_GENERATE_QUEUE": f"e2e-{session}-generate",
        "GENDEF_EDIT_QUEUE": f"e2e-{session}-edit",
        "GENDEF_WEBHOOK_QUEUE": f"e2e-{session}-webhook",
    }
    yield names
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    for name in names.values():
        client.delete(name, *client.keys(f"_kombu.binding.{name}*"))
    client.close()


@pytest.fixture(scope="session")
def queues() -> Iterator[dict[str, str]]:
    """This session's Celery queue names."""
    with own_queues() as names:
        yield names


@contextlib.contextmanager
def consumer_paused(queue: str) -> Iterator[None]:
    """The one worker that consumes ``queue`` stops taking its jobs until the block ends (jobs sent meanwhile stay
    queued): a test plays an operator changing the models under queued work."""
    control = Celery(broker=redis_url(REDIS_DB), set_as_current=False).control
    active = control.inspect(timeout=5).active_queues() or {}  # every deployment's workers share the broker
    ours = [worker for worker, taken in active.items() if any(q["name"] == queue for q in taken)]
    assert len(ours) == 1, active
    assert control.cancel_consumer(queue, destination=ours, reply=True)
    try:
        yield
    finally:
        assert control.add_consumer(queue, destination=ours, reply=True)


@pytest.fixture(scope="session")
def s3_endpoint(e2e_logs: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the deployment's bucket."""
    port = free_port()
    log = e2e_logs / "s3.log"
    process = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/moto-api/", {log: process})
    boto3.client("s3", endpoint_url=url, **S3_CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield url
    stop(process)


@pytest.fixture(scope="session")
def s3(s3_endpoint: str):
    """A boto3 client of the deployment's S3 server (tests use it to play an operator deleting objects)."""
    return boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS)


@pytest.fixture(scope="session")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, digits_checkpoint: Path
) -> Path:
    """The deployment's models: `tiny` (32x32, the default), `tiny64` (the tiny preset at 64x64, untrained) and
    `digits` (tiny, conditional: 10 classes, 2 labels a video)."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_checkpoint, folder / "tiny")
    shutil.copytree(digits_checkpoint, folder / "digits")
    torch.manual_seed(1)
    model = GenDeF(dataclasses.replace(preset("tiny"), resolution=64))
    save_checkpoint(model, folder / "tiny64", card={"data": "nothing: random test weights"})
    return folder


@pytest.fixture(scope="session")
def deployment_env(queues: dict[str, str], s3_endpoint: str, models_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
    return (
        env
        | queues
        | {
            "GENDEF_ENV": "production",
            "GENDEF_REDIS_URL": redis_url(REDIS_DB),
            "GENDEF_STORAGE_BACKEND": "s3",
            "GENDEF_S3_ENDPOINT_URL": s3_endpoint,
            "GENDEF_S3_BUCKET": BUCKET,
            "GENDEF_S3_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
            "GENDEF_S3_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
            "GENDEF_S3_REGION": S3_CREDENTIALS["region_name"],
            "GENDEF_MODELS_DIR": str(models_dir),
            "GENDEF_DEFAULT_MODEL": "tiny",
            "GENDEF_MAX_LOADED_MODELS": "2",
            "GENDEF_DEVICE": "cpu",
            "GENDEF_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "GENDEF_MAX_UPLOAD_PIXELS": str(MAX_UPLOAD_PIXELS),
            "GENDEF_MAX_RENDER_PIXELS": str(MAX_RENDER_PIXELS),
            "GENDEF_MAX_RENDER_FRAMES": str(MAX_RENDER_FRAMES),
            "GENDEF_READINESS_CACHE_S": "0",
            "GENDEF_JOB_TTL_S": "600",
            "GENDEF_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GENDEF_WEBHOOK_BACKOFF_S": "0.5",
            "GENDEF_WEBHOOK_ALLOW": "127.0.0.1/32",  # the tests' receivers listen on loopback
            "GENDEF_EVENTS_HEARTBEAT_S": "1",
            # Stacked batches of 2 (a CPU's default is no batching): jobs are still batched here, and a job queued
            # behind six others surely waits (a batch of 8 could take it along with them, and a cancel test needs it
            # still queued).
            "GENDEF_BATCH_MAX": "2",
            "GENDEF_BATCH_MODE": "stack",
        }
    )


@contextlib.contextmanager
def deployment(env: dict[str, str], logs: Path, prefix: str = "") -> Iterator[str]:
    """Base URL of an API (uvicorn subprocess) with one Celery worker subprocess (concurrency 1) behind it, both
    run in ``logs`` and logging to ``{prefix}api.log``, ``{prefix}worker.log`` there; yielded once /readyz says the
    broker, the store and the worker are reachable."""
    port = free_port()
    worker_log, api_log = logs / f"{prefix}worker.log", logs / f"{prefix}api.log"
    worker = spawn(embedded.worker_args(f"e2e-{port}@%h"), worker_log, env=env, cwd=logs)
    api = spawn(embedded.api_args(port), api_log, env=env, cwd=logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/readyz", {api_log: api, worker_log: worker})
        yield url
    finally:
        stop(api)
        stop(worker)


@pytest.fixture(scope="session")
def api_url(deployment_env: dict[str, str], e2e_logs: Path) -> Iterator[str]:
    """The deployment of the e2e tests (deployment_env)."""
    with deployment(deployment_env, e2e_logs) as url:
        yield url


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client
