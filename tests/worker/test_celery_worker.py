"""A real Celery worker process on the machine's Redis (db 12, queues of each test's own) with a job time limit of
a few seconds: jobs that hang in storage end `failed` with code `timeout`, and the worker goes on. Tasks are sent
the way the API sends them (service.queue.enqueue)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from core.jobs import JobRecord, JobStore, connect_redis
from core.queues import enqueue, live_workers, make_celery
from core.settings import Settings
from core.storage import artifact_key
from service import embedded
from tests.redis_server import redis_url

REDIS_DB = 12


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers: a hung S3 server."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed at teardown
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def start_worker(
    tmp_path: Path, tiny_checkpoint: Path
) -> Iterator[Callable[..., tuple[Settings, subprocess.Popen]]]:
    """start_worker(**settings) -> (its settings, the worker process), ready to take jobs; stopped at the end."""
    started: list[tuple[Settings, subprocess.Popen]] = []

    def start(**overrides) -> tuple[Settings, subprocess.Popen]:
        name = f"test-worker-{secrets.token_hex(4)}"
        values = (
            dict(
                redis_url=redis_url(REDIS_DB),
                generate_queue=f"{name}-generate",
                edit_queue=f"{name}-edit",
                local_storage_dir=tmp_path / "artifacts",
                models_dir=tiny_checkpoint.parent,
                device="cpu",
            )
            | overrides
        )
        settings = Settings(**values)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
        env |= {f"GENDEF_{key.upper()}": str(value) for key, value in values.items()}
        hostname = f"{name}@localhost"
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                embedded.worker_args(hostname),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        started.append((settings, process))
        deadline = time.monotonic() + 60
        while hostname not in live_workers(make_celery(settings), timeout_s=0.5):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        return settings, process

    yield start
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    for settings, process in started:
        process.terminate()
        process.wait(30)
        for queue in (settings.generate_queue, settings.edit_queue):
            client.delete(queue, *client.keys(f"_kombu.binding.{queue}*"))
    client.close()


def run(
    settings: Settings, kind: str, params: dict, parent_id: str | None = None, timeout_s: float = 30
) -> JobRecord:
    jobs = JobStore(connect_redis(settings), ttl_s=600)
    job = jobs.create(kind, params, parent_id=parent_id)
    enqueue(make_celery(settings), settings, job)
    deadline = time.monotonic() + timeout_s
    while (job := jobs.get(job.id)).status in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_a_job_hung_in_storage_fails_as_timeout_and_the_next_job_succeeds(start_worker, tmp_path):
    settings, worker = start_worker(job_time_limit_s=3)
    # The parent's canonical image is a FIFO nobody writes to: reading it blocks, as on a hung network mount.
    parent_id = "0" * 32
    fifo = settings.local_storage_dir / artifact_key(parent_id, "canonical.png")
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)

    start = time.monotonic()
    job = run(
        settings, "resample", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8}, parent_id=parent_id
    )
    assert job.status == "failed" and job.error["code"] == "timeout", job
    assert "GENDEF_JOB_TIME_LIMIT_S" in job.error["message"] and job.artifacts == {}
    assert time.monotonic() - start < 3 + 5  # the soft limit stopped it, not the kill at the hard limit

    job = run(settings, "generate", {"seed": 1, "motion_seed": 2, "num_frames": 1, "fps": 8})
    assert job.status == "succeeded", job.error
    assert worker.poll() is None


def test_a_job_that_ignores_the_soft_limit_is_killed_and_recorded_as_timeout(start_worker, black_hole):
    # An edit first reads its source's fields from S3. boto3 retries through the soft limit's exception while the
    # S3 server never answers: only the kill of the pool process at the hard limit (1 s + 5 s grace) ends the
    # job, and the worker's main process records it.
    settings, worker = start_worker(
        job_time_limit_s=1,
        storage_backend="s3",
        s3_endpoint_url=black_hole,
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    start = time.monotonic()
    job = run(settings, "edit", {"fps": 8}, parent_id="0" * 32)
    assert job.status == "failed" and job.error["code"] == "timeout", job
    assert time.monotonic() - start > 1 + 5
    assert worker.poll() is None
