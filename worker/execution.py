"""One attempt at one job, as every kind runs it: stages with cancel checks between them, progress, the job's
inputs and its parent's artifacts read, its artifacts written under keys derived from the job id."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import torch
from celery.exceptions import SoftTimeLimitExceeded

from core.artifacts import ARTIFACT_FILES, ArtifactError, shots_of
from core.images import ImageError
from core.jobs import Artifact, JobRecord
from core.models import ModelInfo
from core.settings import Settings
from core.storage import BlobNotFound, StorageUnavailable, artifact_key
from model.gendef import GenDeF
from worker import media
from worker.runtime import JobFailure, Runtime

log = logging.getLogger(__name__)


Sampler = Callable[["Draw"], "Sampled"]


# The job store (Redis, also the broker) unreachable: the job cannot be recorded either way, so its task goes back
# to the queue (or stays unacknowledged until Redis is back) and runs again as its next attempt.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class JobCanceled(Exception):
    """A cancel was asked for (or the record vanished): stop before the next stage."""


class JobRun:
    """One attempt at one job: stage bookkeeping, cancel checks, reads and writes of blobs."""

    def __init__(self, rt: Runtime, job: JobRecord, stages: tuple[str, ...], sampler: Sampler | None = None):
        self.rt = rt
        self.job = job
        self.stages = stages
        self.sampler = sampler or sample_locked  # a stacked batch's sampler serves its jobs together
        self._done = 0

    def stage(self, name: str, result: dict[str, Any] | None = None) -> None:
        """Enter the next stage: stop here if a cancel was asked for, else record the progress so far (and the
        job's figures, when given)."""
        self.report(name, self._done / len(self.stages), result)
        self._done += 1

    def report(self, stage: str, progress: float, result: dict[str, Any] | None = None) -> None:
        """Record progress within `stage` (and the job's figures so far, when given); stop if a cancel was asked."""
        if self.rt.jobs.cancel_requested(self.job.id):
            raise JobCanceled
        self.rt.jobs.set_progress(self.job.id, progress, stage, result=result)

    def model(self) -> tuple[GenDeF, ModelInfo]:
        """The job's model (params `model`, `version`; none named: the default) and what it is; the `loading`
        stage is shown while the worker loads it."""
        info = self.rt.served(self.job.params.get("model"), self.job.params.get("version"))
        if not self.rt.is_loaded(info):
            self.rt.jobs.set_progress(self.job.id, 0.0, "loading")
        return self.rt.model(info), info

    def sample(self, draw: Draw) -> Sampled:
        """The job's video from the generator (alone, or in its batch's forward pass); model_error if it fails."""
        return run_model("sampling" if draw.image else "sampling motion", lambda: self.sampler(draw))

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

    def parent_fields(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The source job's canonical image (3, Hc, Wc), fields (T, H, W, 2) and their meta."""
        canonical_png = self.parent_blob("canonical.png")
        deformation_npz = self.parent_blob("deformation.npz")
        try:
            fields, meta = media.decode_fields(deformation_npz)  # (T, H, W, 2)
            canonical, _ = media.decode_image(canonical_png)  # (3, Hc, Wc)
        except (ArtifactError, ImageError) as e:
            raise JobFailure(
                "parent_missing",
                f"the stored artifacts of source job {self.job.parent_id} are unreadable ({e})",
            ) from e
        return canonical, fields, meta

    def shot(self, fields: torch.Tensor, meta: dict[str, Any], canonical_width: int) -> dict[str, int] | None:
        """The shot the job asks for (params `shot`; None: all of the video) in the source job's fields:
        {start, frames, x, width} (core.artifacts.shots_of)."""
        index = self.job.params.get("shot")
        if index is None:
            return None
        shots = shots_of(meta, fields.shape[0], canonical_width)
        if not 0 <= index < len(shots):
            raise JobFailure(
                "invalid_input", f"shot {index} does not exist: the source job has {len(shots)} shot(s)"
            )
        return shots[index]


def timeout_failure(settings: Settings) -> JobFailure:
    return JobFailure(
        "timeout",
        f"the job ran longer than the {settings.job_time_limit_s} s limit (GENDEF_JOB_TIME_LIMIT_S); "
        "ask for fewer frames or raise the limit",
    )


def failure_of(settings: Settings, error: Exception) -> JobFailure:
    """The failure a job ends with when its work raised ``error`` (not JobCanceled, nor a Redis error: those are
    the callers'): a JobFailure as it is, the soft time limit, the store out of reach, else an unexpected error."""
    if isinstance(error, JobFailure):
        return error
    if isinstance(error, SoftTimeLimitExceeded):
        return timeout_failure(settings)
    if isinstance(error, StorageUnavailable):
        return JobFailure(
            "storage_unavailable",
            f"the artifact store could not be used ({error}); submit the job again later",
        )
    log.error("unexpected error in a job", exc_info=error)
    return JobFailure(
        "internal_error",
        f"the worker hit an unexpected {type(error).__name__}; submit the job again, and report the job id "
        "if it happens again",
    )


# (canonical (3, H, W) or None, fields (T, H, W, 2), frames (T, 3, H, W) or None) of one video
Sampled = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class Draw:
    """What one job asks the generator for: a video (image: also its canonical image and frames) or its fields."""

    model: GenDeF
    seed: int
    motion_seed: int
    num_frames: int
    image: bool
    labels: tuple[int, ...] | None = None  # a conditional model's asked labels; None: the seed's


def sample_videos(draws: list[Draw], stack: bool = False) -> list[Sampled]:
    """The videos of draws of one model and frame count: each in its own forward pass, or all in one (stack)."""
    model, num_frames, image = draws[0].model, draws[0].num_frames, any(d.image for d in draws)
    seeds, motion_seeds = [d.seed for d in draws], [d.motion_seed for d in draws]
    labels = [d.labels for d in draws]
    if image:
        out = model.sample(seeds, motion_seeds, num_frames, stack=stack, labels=labels)
        return [(out.canonical[i], out.fields[i], out.frames[i]) for i in range(len(draws))]
    fields = model.sample_motion(seeds, motion_seeds, num_frames, stack=stack, labels=labels)
    return [(None, f, None) for f in fields]


# One sampling at a time per process: the jobs of a pipelined batch (worker/batching.py) run in two threads so that
# one encodes and uploads while the other samples.
SAMPLING_LOCK = threading.Lock()


def sample_locked(draw: Draw) -> Sampled:
    with SAMPLING_LOCK:
        return sample_videos([draw])[0]


def run_model(what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (RuntimeError, ValueError) as e:
        log.exception("the model failed while %s", what)
        raise JobFailure(
            "model_error",
            f"the model failed while {what} ({type(e).__name__}: {e}); if it ran out of memory ask for fewer frames, "
            "otherwise report it with the job id",
        ) from e
