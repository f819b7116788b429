"""A worker killed in the middle of a job: the job is run again by the next worker and completes with one set of
artifacts; a job that kills its worker every time ends `failed` (`worker_lost`) after GENDEF_MAX_ATTEMPTS.

To hold a job in the middle of its run, the source image of a resample is a FIFO: the worker blocks reading it
until the test writes a PNG into it (as on a slow network mount)."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import psutil
from PIL import Image

from core.queues import enqueue, make_celery
from core.storage import artifact_key
from tests.reliability.conftest import Deployment

PARAMS = {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8}


def held_resample(d: Deployment, parent_id: str) -> tuple[str, Path]:
    """Queue a resample whose source canonical image is a FIFO nobody writes yet."""
    fifo = d.settings.local_storage_dir / artifact_key(parent_id, "canonical.png")
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    job = d.jobs.create("resample", PARAMS, parent_id=parent_id)
    enqueue(make_celery(d.settings), d.settings, job)
    return job.id, fifo


def png_32() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


def test_a_job_whose_worker_is_killed_completes_on_the_next_worker(own_redis, deploy):
    # visibility timeout = 2 x (5 s + 5 s grace): the killed worker's job goes back to the queue after 20 s.
    d = deploy(redis_url=own_redis.url, job_time_limit_s=5)
    worker = d.start_worker()
    job_id, fifo = held_resample(d, "a" * 32)
    d.wait_for_status(job_id, "running")
    for process in [*worker.children(recursive=True), worker]:  # the whole worker, as a machine crash would
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs([worker])
    assert d.jobs.get(job_id).status == "running"

    d.start_worker()
    canonical = png_32()
    feeder = threading.Thread(target=lambda: fifo.write_bytes(canonical), daemon=True)  # blocks until read
    feeder.start()
    job = d.wait(job_id, timeout_s=120)

    assert job.status == "succeeded", (job, d.logs())
    assert job.attempts == 2
    folder = d.settings.local_storage_dir / "jobs" / job_id
    assert sorted(p.name for p in folder.iterdir()) == ["canonical.png", "deformation.npz", "video.mp4"]
    assert {name: a.bytes for name, a in job.artifacts.items()} == {
        "canonical": len(canonical),
        "deformation": (folder / "deformation.npz").stat().st_size,
        "video": (folder / "video.mp4").stat().st_size,
    }
    assert (folder / "canonical.png").read_bytes() == canonical  # a resample keeps its source byte for byte


def test_a_job_that_kills_its_worker_every_time_ends_worker_lost(own_redis, deploy):
    d = deploy(redis_url=own_redis.url, job_time_limit_s=30, max_attempts=3)
    worker = d.start_worker()
    job_id, _ = held_resample(d, "b" * 32)
    killed: list[int] = []

    def kill_each_attempt(job) -> None:
        # Each attempt that starts dies at once: SIGKILL of the pool process running it (as the OOM killer does).
        if job.status == "running" and job.attempts > len(killed):
            child = worker.children()[0]
            child.kill()
            child.wait()
            killed.append(job.attempts)

    job = d.wait(job_id, on_poll=kill_each_attempt, timeout_s=180)

    assert killed == [1, 2, 3]
    assert job.status == "failed" and job.error["code"] == "worker_lost", (job, d.logs())
    assert job.attempts == 3 and "3 times" in job.error["message"]
    assert worker.is_running()
    ok = d.jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": 2, "fps": 8})
    enqueue(make_celery(d.settings), d.settings, ok)
    assert d.wait(ok.id).status == "succeeded"
