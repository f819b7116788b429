"""Turning a valid request into a queued job: check the parent job, record the job, then send its task."""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
from typing import Any, NamedTuple

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from PIL import Image

from service.deps import Services
from service.jobs import JobRecord, new_job_id
from service.queue import enqueue, queue_of
from service.schemas import GenerateRequest
from service.storage import BlobNotFound, input_key
from service.uploads import check_image
from service.webhooks import spec as webhook_spec

log = logging.getLogger(__name__)

RANDOM_SEED_BOUND = 2**31  # seeds the API draws are below this (any 0..2**32-1 is accepted)
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}


class Upload(NamedTuple):
    """A checked upload, stored as the job's input `name` under input_key(job id, filename) before it is queued."""

    name: str
    filename: str
    data: bytes
    content_type: str


def parent_fps(parent: JobRecord) -> int:
    """The frame rate of the job a new video is made from (a job of another kind: the API's default)."""
    return parent.params.get("fps", GenerateRequest.model_fields["fps"].default)


def _queue(
    svc: Services,
    kind: str,
    params: dict[str, Any],
    parent_id: str | None = None,
    upload: Upload | None = None,
    webhook: dict[str, Any] | None = None,
) -> JobRecord:
    """Store the upload (a failed job keeps its input), write the job record, then send the task: a worker never
    sees a job id without its record."""
    job_id, inputs = new_job_id(), None
    if upload is not None:
        key = input_key(job_id, upload.filename)
        svc.blobs.put(key, upload.data, upload.content_type)
        inputs = {upload.name: key}
    job = svc.jobs.create(
        kind,
        params,
        parent_id=parent_id,
        inputs=inputs,
        job_id=job_id,
        queue=queue_of(svc.settings, kind),
        webhook=webhook,
    )
    try:
        enqueue(svc.celery, svc.settings, job)
    except Exception:
        log.exception("could not queue job %s", job.id)
        with contextlib.suppress(Exception):  # Redis itself may be what is down
            svc.jobs.mark_failed(job.id, "queue_unavailable", "The job could not be queued; submit it again.")
        raise
    log.info("queued %s job %s", kind, job.id)
    return job


def finished_parent(svc: Services, job_id: str, field: str) -> JobRecord:
    """The succeeded job a request builds on, or a 404/409 that says what to do."""
    parent = svc.jobs.get(job_id)
    if parent is None:
        raise HTTPException(404, f"{field}: job {job_id} does not exist (or its record has expired)")
    if parent.status != "succeeded":
        if parent.status in ("queued", "running"):
            advice = f"wait until it has succeeded (poll GET /jobs/{job_id})"
        else:
            advice = "use a job that succeeded"
        raise HTTPException(409, f"{field}: job {job_id} is {parent.status}, not succeeded: {advice}")
    return parent


def _content_seed(svc: Services, job: JobRecord) -> int:
    """The content seed behind a job's canonical image: an edit's comes from the job it edited."""
    while "seed" not in job.params:
        if job.kind not in ("edit", "resample"):
            raise HTTPException(
                409,
                f"canonical_from: job {job.id} is a {job.kind} job; its canonical image was not "
                "made by the generator, so there is no content code to sample new motion for. "
                "Resample a generate, resample or edit job instead",
            )
        parent = svc.jobs.get(job.parent_id) if job.parent_id else None
        if parent is None:
            raise HTTPException(
                409,
                f"canonical_from: the job that made the canonical image of {job.id} has "
                "expired; generate a new video",
            )
        job = parent
    return job.params["seed"]


def _random_seed() -> int:
    return secrets.randbelow(RANDOM_SEED_BOUND)


def submit_generate(svc: Services, req: GenerateRequest) -> JobRecord:
    limit = svc.settings.max_frames
    if req.num_frames > limit:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", "num_frames"),
                    "input": req.num_frames,
                    "ctx": {"le": limit},
                    "msg": f"Input should be less than or equal to {limit} (this deployment's frame limit)",
                }
            ]
        )
    webhook = webhook_spec(svc.settings, req.webhook and str(req.webhook), req.webhook_events, "body")
    motion_seed = _random_seed() if req.motion_seed is None else req.motion_seed
    params = {"motion_seed": motion_seed, "num_frames": req.num_frames, "fps": req.fps}
    if req.canonical_from is None:
        seed = _random_seed() if req.seed is None else req.seed
        return _queue(svc, "generate", {"seed": seed} | params, webhook=webhook)
    if req.seed is not None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "seed"),
                    "input": req.seed,
                    "msg": "seed cannot be combined with canonical_from: a resample keeps the canonical image (and its "
                    "content seed) of that job; leave seed out",
                }
            ]
        )
    parent = finished_parent(svc, req.canonical_from, "canonical_from")
    return _queue(
        svc, "resample", {"seed": _content_seed(svc, parent)} | params, parent_id=parent.id, webhook=webhook
    )


def parent_artifact(svc: Services, parent: JobRecord, name: str) -> bytes:
    """The bytes of a stored artifact of the job a request builds on, or a 409 that says it is gone."""
    artifact = parent.artifacts.get(name)
    try:
        data = svc.blobs.get(artifact.key) if artifact else None
    except BlobNotFound:
        data = None
    if data is None:
        raise HTTPException(
            409, f"job_id: the {name} of job {parent.id} is no longer stored; start again from a new job"
        )
    return data


def _canonical_size(svc: Services, parent: JobRecord) -> tuple[int, int]:
    return Image.open(io.BytesIO(parent_artifact(svc, parent, "canonical"))).size  # header only


def submit_edit(
    svc: Services,
    job_id: str,
    image: bytes,
    fps: int | None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> JobRecord:
    """Check the parent and the upload, store the upload as the job's input, then queue. The worker resizes."""
    webhook = webhook_spec(svc.settings, webhook_url, webhook_events, "form")
    parent = finished_parent(svc, job_id, "job_id")
    if len(image) > svc.settings.max_upload_bytes:
        raise HTTPException(413, f"image is larger than the limit of {svc.settings.max_upload_bytes} bytes")
    info = check_image(image, svc.settings.max_upload_pixels)
    size = _canonical_size(svc, parent)
    params = {
        "fps": parent_fps(parent) if fps is None else fps,
        "resized": (info.width, info.height) != size,
        "source_size": [info.width, info.height],
    }
    upload = Upload("image", f"image.{info.extension}", image, CONTENT_TYPES[info.format])
    return _queue(svc, "edit", params, parent_id=parent.id, upload=upload, webhook=webhook)
