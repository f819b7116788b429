"""Dynamic batching (worker/batching.py): in-process against the session's Redis (db 15, a queue name per test),
and once through a real Celery worker process that finds jobs waiting."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.jobs import JobRecord
from core.queues import enqueue, live_workers, make_celery
from core.settings import Settings
from model.gendef import STACK_TOLERANCE
from tests.redis_server import redis_url
from worker import batching, media
from worker.runtime import Runtime
from worker.tasks import run_job

REDIS_DB = 15


def settings(tmp_path: Path, checkpoint: Path, **overrides) -> Settings:
    values = dict(
        redis_url=redis_url(REDIS_DB), storage_backend="local", local_storage_dir=tmp_path / "artifacts", models_dir=checkpoint.parent,
        device="cpu", url_secret="s" * 32, generate_queue=f"test-batch-{secrets.token_hex(4)}", batch_wait_ms=0,
        batch_mode="stack",  # a CPU's default is off
    )  # fmt: skip
    return Settings(**(values | overrides))


@pytest.fixture(params=["stack", "pipeline"])
def rt(request, tmp_path, tiny_checkpoint) -> Runtime:
    return Runtime(settings(tmp_path, tiny_checkpoint, batch_max=4, batch_mode=request.param))


def queue(
    rt: Runtime, seed: int, num_frames: int = 4, kind: str = "generate", made_by: dict | None = None, **create
) -> JobRecord:
    params = {"seed": seed, "motion_seed": seed + 100, "num_frames": num_frames, "fps": 8} | (made_by or {})
    job = rt.jobs.create(kind, params, queue=rt.settings.generate_queue, **create)
    time.sleep(
        0.002
    )  # the queue order has millisecond resolution: jobs of the same millisecond are in any order
    return job


def blob(rt: Runtime, job: JobRecord, name: str) -> bytes:
    return rt.blobs.get(job.artifacts[name].key)


def assert_same_artifacts(rt: Runtime, job: JobRecord, alone: JobRecord) -> None:
    """Byte-identical canonical and video, bit-identical fields (the npz names its job, so it differs there)."""
    assert blob(rt, job, "canonical") == blob(rt, alone, "canonical")
    fields, _ = media.decode_fields(blob(rt, job, "deformation"))
    alone_fields, _ = media.decode_fields(blob(rt, alone, "deformation"))
    assert fields.equal(alone_fields), f"fields differ by up to {(fields - alone_fields).abs().max():.3g}"
    assert blob(rt, job, "video") == blob(rt, alone, "video")


def assert_close_artifacts(rt: Runtime, job: JobRecord, alone: JobRecord) -> None:
    """Within the documented tolerance of stacking: canonical PNGs at most one level apart, fields 1e-4."""
    canonical, _ = media.decode_image(blob(rt, job, "canonical"))
    alone_canonical, _ = media.decode_image(blob(rt, alone, "canonical"))
    assert (canonical - alone_canonical).abs().max() <= STACK_TOLERANCE["canonical"] + 1e-6
    fields, _ = media.decode_fields(blob(rt, job, "deformation"))
    alone_fields, _ = media.decode_fields(blob(rt, alone, "deformation"))
    assert (fields - alone_fields).abs().max() <= STACK_TOLERANCE["fields"]


def test_a_batch_takes_queued_jobs_in_order_and_each_result_matches_the_job_alone(rt):
    """Pipelined: bit-identical to the job alone; stacked (frame counts mixed, a resample among them): within the
    tolerance; alone, again: bit-identical."""
    source = rt.jobs.create("generate", {"seed": 9, "motion_seed": 9, "num_frames": 4, "fps": 8})
    assert run_job(rt, source.id, "generate") == "succeeded"
    jobs = [queue(rt, seed, num_frames) for seed, num_frames in [(1, 4), (2, 8), (3, 4)]]
    jobs.append(queue(rt, 9, 4, kind="resample", parent_id=source.id))
    jobs.append(queue(rt, 5, 4))
    batching.run(rt, jobs[0].id, "generate", run_job)

    done = [rt.jobs.get(j.id) for j in jobs]
    assert [j.status for j in done] == ["succeeded"] * 4 + ["queued"]  # batch_max 4, in queue order
    assert all(j.attempts == 1 for j in done[:4])
    assert max(j.started_at for j in done[:4]) <= min(j.finished_at for j in done[:4])  # taken together
    assert rt.jobs.queue_position(done[4]) == 0
    # the claimed jobs' own messages, delivered now, change nothing and take no batch of their own
    for j in done[1:4]:
        batching.run(rt, j.id, j.kind, run_job)
        assert rt.jobs.get(j.id) == j
    assert rt.jobs.get(jobs[4].id).status == "queued"
    # the same seeds, one by one, outside any batch
    for job in done[:4]:
        alone = rt.jobs.create(job.kind, job.params, parent_id=job.parent_id)
        again = rt.jobs.create(job.kind, job.params, parent_id=job.parent_id)
        for one in (alone, again):
            assert run_job(rt, one.id, job.kind) == "succeeded"
        alone, again = rt.jobs.get(alone.id), rt.jobs.get(again.id)
        assert_same_artifacts(rt, again, alone)
        if rt.settings.batch_mode == "pipeline":
            assert_same_artifacts(rt, job, alone)
        else:
            assert_close_artifacts(rt, job, alone)


def test_a_failing_job_fails_alone_and_canceled_or_other_jobs_are_not_taken(rt):
    leader = queue(rt, 1)
    orphan = queue(rt, 2, kind="resample", parent_id="0" * 32)  # its source job does not exist
    canceled = queue(rt, 3)
    rt.jobs.cancel(canceled.id)
    other_kind = rt.jobs.create("decompose", {"num_frames": 4}, queue=rt.settings.generate_queue)
    last = queue(rt, 4)
    batching.run(rt, leader.id, "generate", run_job)

    assert rt.jobs.get(leader.id).status == "succeeded" and rt.jobs.get(last.id).status == "succeeded"
    failed = rt.jobs.get(orphan.id)
    assert failed.status == "failed" and failed.error["code"] == "parent_missing"
    assert rt.jobs.get(canceled.id).attempts == 0
    assert rt.jobs.get(other_kind.id).status == "queued"


def test_jobs_of_a_batch_whose_worker_died_run_again_with_the_leaders_next_attempt(rt):
    leader, member = queue(rt, 1), queue(rt, 2)
    # the first attempt: the leader started and claimed the member, then its worker died
    rt.jobs.mark_running(leader.id)
    assert rt.jobs.claim(leader.id, member.id).status == "running"
    batching.run(rt, member.id, "generate", run_job)  # the member's own message: it is the batch's job
    assert rt.jobs.get(member.id).status == "running"

    batching.run(rt, leader.id, "generate", run_job)  # Celery redelivers the leader's message
    for job_id in (leader.id, member.id):
        job = rt.jobs.get(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
    assert rt.jobs.claimed_by(member.id) is None and rt.jobs.batch_members(leader.id) == []


@pytest.fixture
def worker(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[tuple[Settings, callable]]:
    """(settings, start): start() runs a Celery worker process with these settings and waits until it answers."""
    values = dict(
        redis_url=redis_url(REDIS_DB), generate_queue=f"test-batch-{secrets.token_hex(4)}", edit_queue="test-batch-edit",
        local_storage_dir=tmp_path / "artifacts", checkpoint=tiny_checkpoint, device="cpu", batch_max=8, batch_mode="stack",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
    env |= {f"GENDEF_{key.upper()}": str(value) for key, value in values.items()}
    processes: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"

    def start() -> None:
        hostname = f"batch-{secrets.token_hex(4)}@localhost"
        with log.open("wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1",
                 "--hostname", hostname, "--loglevel", "INFO"], env=env, stdout=out, stderr=subprocess.STDOUT,
                cwd=tmp_path))  # fmt: skip
        deadline = time.monotonic() + 120
        while hostname not in live_workers(make_celery(Settings(**values)), timeout_s=0.5):
            assert processes[0].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]

    yield Settings(**values), start
    for process in processes:
        process.terminate()
        process.wait(30)


def test_a_celery_worker_runs_waiting_jobs_as_one_batch_and_acknowledges_the_others_messages(worker):
    config, start = worker
    rt = Runtime(config)
    celery = make_celery(config)
    jobs = [queue(rt, seed) for seed in range(4)]
    for job in jobs:
        enqueue(celery, config, job)
    start()
    deadline = time.monotonic() + 180
    while any(rt.jobs.get(j.id).status != "succeeded" for j in jobs):
        assert time.monotonic() < deadline, [rt.jobs.get(j.id).status for j in jobs]
        time.sleep(0.2)
    done = [rt.jobs.get(j.id) for j in jobs]
    assert all(j.attempts == 1 for j in done)
    assert max(j.started_at for j in done) <= min(j.finished_at for j in done)  # one batch
    while rt.jobs.redis.llen(config.generate_queue):  # every message taken (the claimed ones as no-ops) ...
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    assert [rt.jobs.get(j.id) for j in jobs] == done  # ... and none ran its job again


def test_a_cancel_stops_only_that_job_of_the_batch(rt):
    leader, member, other = queue(rt, 1), queue(rt, 2), queue(rt, 3)
    rt.jobs.mark_running(leader.id)  # a batch that holds member and other (its worker then died)
    for job in (member, other):
        rt.jobs.claim(leader.id, job.id)
    rt.jobs.cancel(member.id)  # asked while the batch holds it
    batching.run(rt, leader.id, "generate", run_job)
    assert [rt.jobs.get(j.id).status for j in (leader, member, other)] == [
        "succeeded",
        "canceled",
        "succeeded",
    ]


def test_a_batch_takes_only_jobs_of_its_leaders_model_and_version(tmp_path, tiny_checkpoint):
    models = tmp_path / "models"
    for name in ("a", "b"):
        shutil.copytree(tiny_checkpoint, models / name)
    rt = Runtime(settings(tmp_path, models / "a", batch_max=4))  # the models folder: a and b
    version = rt.served("a").version
    made_by = [("a", version), ("b", version), ("a", "0" * 12), ("a", version)]
    jobs = [queue(rt, seed, made_by={"model": m, "version": v}) for seed, (m, v) in enumerate(made_by)]
    batching.run(rt, jobs[0].id, "generate", run_job)
    assert [rt.jobs.get(j.id).status for j in jobs] == ["succeeded", "queued", "queued", "succeeded"]
    assert rt.loaded_models() == [f"a@{version}"]


def test_batch_mode_off_runs_one_job_per_task(tmp_path, tiny_checkpoint):
    rt = Runtime(settings(tmp_path, tiny_checkpoint, batch_max=4, batch_mode="off"))
    jobs = [queue(rt, seed) for seed in (1, 2)]
    batching.run(rt, jobs[0].id, "generate", run_job)
    assert [rt.jobs.get(j.id).status for j in jobs] == ["succeeded", "queued"]


def test_a_batch_of_jobs_with_mixed_labels_gives_each_video_its_own_labels(tmp_path, digits_checkpoint):
    """Stacked: one forward pass for jobs of the seed's labels and of asked ones; each within the stacking
    tolerance of the job alone."""
    rt = Runtime(settings(tmp_path, digits_checkpoint, batch_max=4))
    asks = [None, [1, 2], None, [7, 8]]
    jobs = [queue(rt, 3, made_by={} if a is None else {"labels": a}) for a in asks]
    batching.run(rt, jobs[0].id, "generate", run_job)
    done = [rt.jobs.get(j.id) for j in jobs]
    assert [j.status for j in done] == ["succeeded"] * 4
    assert done[0].result == done[2].result != done[1].result
    assert [j.result["labels"] for j in done[1::2]] == [[1, 2], [7, 8]]
    for job in done:
        alone = rt.jobs.create("generate", job.params)
        assert run_job(rt, alone.id, "generate") == "succeeded"
        assert_close_artifacts(rt, job, rt.jobs.get(alone.id))
