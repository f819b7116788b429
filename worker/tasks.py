"""The three tasks. Each takes only a job id and reads everything else from the job record and the stores.

A job runs as stages (progress written to the record at each); a cancel is honoured between stages. Artifacts are
written under keys derived from the job id, so a redelivered task overwrites them; they are presented only by
`mark_succeeded`, so a canceled or failed job never shows half a result. Every exception ends the job as `failed`
with a stable code; the worker process goes on with the next job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
import torch
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from model.gendef import SEED_RANGE, GenDeF
from model.warp import render
from service.jobs import Artifact, JobRecord
from service.storage import BlobNotFound, StorageUnavailable, artifact_key
from worker import batching, media, runtime
from worker.celery_app import app
from worker.runtime import JobFailure, Runtime

log = logging.getLogger(__name__)

# Artifact name in the job document -> (file name under jobs/{id}/, content type)
ARTIFACT_FILES = {
    "canonical": ("canonical.png", media.PNG_CONTENT_TYPE),
    "deformation": ("deformation.npz", media.NPZ_CONTENT_TYPE),
    "video": ("video.mp4", media.VIDEO_CONTENT_TYPE),
    "tracks": ("tracks.json", "application/json"),  # track
    "masks": ("masks.npz", media.NPZ_CONTENT_TYPE),  # segment
}


# The job store (Redis, also the broker) unreachable: the job cannot be recorded either way, so its task goes back
# to the queue (or stays unacknowledged until Redis is back) and runs again as its next attempt.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class JobCanceled(Exception):
    """A cancel was asked for (or the record vanished): stop before the next stage."""


class JobRun:
    """One attempt at one job: stage bookkeeping, cancel checks, reads and writes of blobs."""

    def __init__(self, rt: Runtime, job: JobRecord, stages: tuple[str, ...]):
        self.rt = rt
        self.job = job
        self.stages = stages
        self._done = 0

    def stage(self, name: str) -> None:
        """Enter the next stage: stop here if a cancel was asked for, else record the progress so far."""
        self.report(name, self._done / len(self.stages))
        self._done += 1

    def report(self, stage: str, progress: float, result: dict[str, Any] | None = None) -> None:
        """Record progress within `stage` (and the job's figures so far, when given); stop if a cancel was asked."""
        if self.rt.jobs.cancel_requested(self.job.id):
            raise JobCanceled
        self.rt.jobs.set_progress(self.job.id, progress, stage, result=result)

    def model(self) -> GenDeF:
        """The model; the `loading` stage is shown while a pool process loads it for its first job."""
        if not self.rt.model_loaded:
            self.rt.jobs.set_progress(self.job.id, 0.0, "loading")
        return self.rt.model()

    def parent_blob(self, name: str) -> bytes:
        parent_id = self.job.parent_id
        if not parent_id:
            raise JobFailure("parent_missing", f"this {self.job.kind} job names no source job")
        try:
            return self.rt.blobs.get(artifact_key(parent_id, name))
        except BlobNotFound:
            raise JobFailure(
                "parent_missing",
                f"the {name} of source job {parent_id} is no longer stored (expired or deleted); "
                "generate a new video and start again from it",
            ) from None

    def input_blob(self, name: str) -> bytes:
        key = self.job.inputs.get(name)
        try:
            if key is None:
                raise BlobNotFound(name)
            return self.rt.blobs.get(key)
        except BlobNotFound:
            raise JobFailure(
                "invalid_input", f"the uploaded {name} of this job is not stored; submit the edit again"
            ) from None

    def upload(self, files: dict[str, bytes]) -> dict[str, Artifact]:
        artifacts = {}
        for name, data in files.items():
            filename, content_type = ARTIFACT_FILES[name]
            key = artifact_key(self.job.id, filename)
            self.rt.blobs.put(key, data, content_type)
            artifacts[name] = Artifact(key=key, content_type=content_type, bytes=len(data))
        return artifacts


def fields_meta(job: JobRecord, rt: Runtime, fields: torch.Tensor) -> dict[str, Any]:
    """The `meta` entry of deformation.npz: the convention, the model and what made these fields."""
    num_frames, height, width, _ = fields.shape  # (T, H, W, 2)
    return {
        "convention": media.FIELDS_CONVENTION,
        "layout": "fields: float32 (T, H, W, 2)",
        "model": rt.settings.checkpoint.name,
        "job_id": job.id,
        "kind": job.kind,
        "seed": job.params["seed"],
        "motion_seed": job.params["motion_seed"],
        "canonical_from": job.parent_id,
        "num_frames": num_frames,
        "height": height,
        "width": width,
    }


# One sampling at a time per process: the jobs of a batch (worker/batching.py) run in two threads so that one
# encodes and uploads while the other samples.
SAMPLING_LOCK = threading.Lock()


def run_model(what: str, call: Callable[[], Any]) -> Any:
    try:
        with SAMPLING_LOCK:
            return call()
    except (RuntimeError, ValueError) as e:
        log.exception("the model failed while %s", what)
        raise JobFailure(
            "model_error",
            f"the model failed while {what} ({type(e).__name__}: {e}); if it ran out of memory ask for fewer frames, "
            "otherwise report it with the job id",
        ) from e


def sampling_args(model: GenDeF, params: dict[str, Any]) -> tuple[int, int, int]:
    """(seed, motion_seed, num_frames) of a job, refused with invalid_input where the loaded model cannot go."""
    seed, motion_seed, num_frames = int(params["seed"]), int(params["motion_seed"]), int(params["num_frames"])
    if not 1 <= num_frames <= model.max_frames:
        raise JobFailure(
            "invalid_input",
            f"num_frames={num_frames} is outside what the loaded model makes (1 to {model.max_frames}); "
            "ask for fewer frames",
        )
    for name, value in (("seed", seed), ("motion_seed", motion_seed)):
        if not 0 <= value < SEED_RANGE:
            raise JobFailure(
                "invalid_input", f"{name}={value} is outside the model's seed range 0 to {SEED_RANGE - 1}"
            )
    return seed, motion_seed, num_frames


def do_generate(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    model = run.model()
    seed, motion_seed, num_frames = sampling_args(model, params)
    run.stage("sampling")
    out = run_model("sampling", lambda: model.sample([seed], [motion_seed], num_frames))
    canonical, fields, frames = (
        out.canonical[0],
        out.fields[0],
        out.frames[0],
    )  # (3,H,W), (T,H,W,2), (T,3,H,W)
    run.stage("encoding")
    files = {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, fields_meta(run.job, run.rt, fields)),
        "video": media.encode_video(frames, int(params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


def do_resample(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    canonical_png = run.parent_blob("canonical.png")  # kept byte for byte: same content, new motion
    model = run.model()
    seed, motion_seed, num_frames = sampling_args(model, params)
    run.stage("sampling")
    fields = run_model(
        "sampling motion", lambda: model.sample_motion([seed], [motion_seed], num_frames)[0]
    )  # (T, H, W, 2)
    run.stage("warping")
    canonical, _ = media.decode_image(canonical_png)  # (3, H, W)
    frames = render(canonical[None].to(fields.device), fields[None])[0]  # (T, 3, H, W)
    run.stage("encoding")
    files = {
        "canonical": canonical_png,
        "deformation": media.encode_fields(fields, fields_meta(run.job, run.rt, fields)),
        "video": media.encode_video(frames, int(params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


def do_edit(run: JobRun) -> dict[str, Artifact]:
    """Warp the uploaded image by the source job's stored fields; the generators never run."""
    deformation_npz = run.parent_blob("deformation.npz")  # reused byte for byte
    upload = run.input_blob("image")
    run.stage("warping")
    try:
        fields, meta = media.decode_fields(deformation_npz)  # (T, H, W, 2)
    except media.MediaError as e:
        raise JobFailure(
            "parent_missing", f"the stored deformation of source job {run.job.parent_id} is unreadable ({e})"
        ) from e
    # A decomposed video's canonical image is larger than its frames; the fields' meta records its size.
    size = (meta.get("canonical_height", fields.shape[1]), meta.get("canonical_width", fields.shape[2]))
    try:
        image, _ = media.decode_image(upload, size=size)  # (3, Hc, Wc)
    except media.MediaError as e:
        raise JobFailure(
            "invalid_input", f"the uploaded image cannot be decoded ({e}); upload a PNG or JPEG"
        ) from e
    frames = render(image[None], fields[None])[0]  # (T, 3, H, W)
    run.stage("encoding")
    files = {
        "canonical": media.encode_png(image),
        "deformation": deformation_npz,
        "video": media.encode_video(frames, int(run.job.params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


JOB_KINDS: dict[str, tuple[Callable[[JobRun], dict[str, Artifact]], tuple[str, ...]]] = {
    "generate": (do_generate, ("sampling", "encoding", "uploading")),
    "resample": (do_resample, ("sampling", "warping", "encoding", "uploading")),
    "edit": (do_edit, ("warping", "encoding", "uploading")),
}


def run_job(rt: Runtime, job_id: str, kind: str, claimed: JobRecord | None = None) -> str | None:
    """Run one job to a final status; returns that status (None when there was nothing to run). ``claimed``: the
    record of a job a batch has just started (JobStore.start_queued), run as it is."""
    lost = claimed or rt.jobs.get(job_id)
    if (
        claimed is None
        and lost is not None
        and lost.status == "running"
        and lost.attempts >= rt.settings.max_attempts
    ):
        # Every earlier attempt ended without recording an end: its worker process died (killed, out of memory).
        log.error("job %s: its worker died in each of %d attempts; not tried again", job_id, lost.attempts)
        rt.jobs.mark_failed(
            job_id,
            "worker_lost",
            (
                f"the worker running this job stopped without finishing it {lost.attempts} times (killed, out of "
                "memory or crashed), so it is not tried again; ask for fewer frames, or report the job id"
            ),
        )
        return "failed"
    job = claimed or rt.jobs.mark_running(job_id)
    if job is None:
        log.warning("job %s has no record (expired?): skipped", job_id)
        return None
    if job.status != "running":
        log.info("job %s is %s: skipped", job_id, job.status)
        return None
    if job.kind != kind:
        rt.jobs.mark_failed(job_id, "internal_error", f"a {job.kind} job was sent to the {kind} task")
        return "failed"
    work, stages = JOB_KINDS[kind]
    log.info("job %s (%s, attempt %d) started", job_id, kind, job.attempts)
    try:
        artifacts = work(JobRun(rt, job, stages))
    except JobCanceled:
        rt.jobs.mark_canceled(job_id)
        log.info("job %s canceled", job_id)
        return "canceled"
    except JobFailure as e:
        error = e
    except SoftTimeLimitExceeded:
        error = timeout_failure(rt)
    except REDIS_ERRORS:
        raise
    except StorageUnavailable as e:
        error = JobFailure(
            "storage_unavailable", f"the artifact store could not be used ({e}); submit the job again later"
        )
    except Exception as e:
        log.exception("job %s failed unexpectedly", job_id)
        error = JobFailure(
            "internal_error",
            f"the worker hit an unexpected {type(e).__name__}; submit the job again, and report the job id "
            "if it happens again",
        )
    else:
        rt.jobs.mark_succeeded(job_id, artifacts)
        log.info("job %s succeeded", job_id)
        return "succeeded"
    log.warning("job %s failed: %s", job_id, error)
    rt.jobs.mark_failed(job_id, error.code, error.message)
    return "failed"


def timeout_failure(rt: Runtime) -> JobFailure:
    return JobFailure(
        "timeout",
        f"the job ran longer than the {rt.settings.job_time_limit_s} s limit (GENDEF_JOB_TIME_LIMIT_S); "
        "ask for fewer frames or raise the limit",
    )


class JobTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """A pool process killed at the hard time limit (it ignored the soft one) cannot record its job's end:
        Celery calls this in the worker's main process then."""
        if isinstance(exc, TimeLimitExceeded):
            rt = runtime.get()
            failure = timeout_failure(rt)
            for job_id in [args[0], *batching.members(rt, args[0])]:  # the job and those its batch claimed
                rt.jobs.mark_failed(job_id, failure.code, failure.message)


def run_task(job_id: str, kind: str) -> None:
    """run_job (in a batch for generate/resample); with Redis unreachable the task is rejected back to its queue:
    the job is never dropped."""
    rt = runtime.get()
    try:
        if kind in batching.KINDS and rt.settings.batch_max > 1:
            batching.run(rt, job_id, kind, run_job)
        else:
            run_job(rt, job_id, kind)
    except SoftTimeLimitExceeded:  # a batch's time was up (a job alone records its own timeout)
        failure = timeout_failure(rt)
        for member in [job_id, *batching.members(rt, job_id)]:
            rt.jobs.mark_failed(member, failure.code, failure.message)
    except REDIS_ERRORS as e:
        log.warning(
            "job %s: the job store (Redis) is unreachable (%s); the task goes back to the queue", job_id, e
        )
        raise Reject(str(e), requeue=True) from e


@app.task(name="gendef.generate", base=JobTask)
def generate(job_id: str) -> None:
    run_task(job_id, "generate")


@app.task(name="gendef.resample", base=JobTask)
def resample(job_id: str) -> None:
    run_task(job_id, "resample")


@app.task(name="gendef.edit", base=JobTask)
def edit(job_id: str) -> None:
    run_task(job_id, "edit")
