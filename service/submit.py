"""Turning a valid request into a queued job: check the parent job and the upload, record the job, then send its
task. Refusals are domain errors (core/errors.py); service/errors.py turns them into HTTP answers."""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any, NamedTuple

from core.artifacts import ArtifactError, fields_meta, fields_shape, shots_of
from core.errors import Conflict, Invalid, NotFound, TooLarge, UnsupportedFormat
from core.images import check_image, image_mode, image_size
from core.jobs import JobRecord, new_job_id
from core.models import ModelInfo
from core.queues import enqueue, queue_of
from core.storage import BlobNotFound, input_key
from core.webhooks import spec as webhook_spec
from service.deps import Services
from service.limits import ASPECT_TOLERANCE, DEFAULT_FPS, MAX_FPS, MAX_RENDER_FPS, MIN_FPS, RANDOM_SEED_BOUND
from service.schemas import GenerateRequest, TrackRequest
from service.uploads import check_video

log = logging.getLogger(__name__)
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
# Jobs whose artifacts are a canonical image and its fields: what edit, track and segment build on.
FIELD_KINDS = ("generate", "resample", "edit", "decompose")
MASK_MODES = ("1", "L", "P")  # one channel whose values are the labels


class Upload(NamedTuple):
    """A checked upload, stored as the job's input `name` under input_key(job id, filename) before it is queued."""

    name: str
    filename: str
    data: bytes
    content_type: str


def parent_fps(parent: JobRecord) -> int:
    """The frame rate of the job a new video is made from (a job of another kind: the API's default)."""
    return parent.params.get("fps", DEFAULT_FPS)


def _queue(
    svc: Services,
    kind: str,
    params: dict[str, Any],
    parent_id: str | None = None,
    upload: Upload | None = None,
    webhook: dict[str, Any] | None = None,
) -> JobRecord:
    """Store the upload (a failed job keeps its input), write the job record (marked unsent), then send the task
    and clear the mark (answered 202 only then): a worker never sees a job id without its record, and a record whose task was never sent
    (this process died, Redis failed) is failed by the workers' sweep (JobStore.fail_unsent)."""
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
        queue=queue_of(svc.settings, kind, params.get("model")),
        webhook=webhook,
    )
    try:
        enqueue(svc.celery, svc.settings, job)
    except Exception:
        log.exception("could not queue job %s", job.id)
        with contextlib.suppress(Exception):  # Redis itself may be what is down: then the sweep fails it
            svc.jobs.fail_unqueued(job.id)
        raise
    # Redis failing here answers 503 like a failed send: only a job whose mark is cleared is ever answered 202,
    # so the sweep never fails an accepted job.
    svc.jobs.sent(job.id)
    log.info("queued %s job %s", kind, job.id)
    return job


def finished_parent(svc: Services, job_id: str, field: str) -> JobRecord:
    """The succeeded job a request builds on, or NotFound / Conflict that says what to do."""
    parent = svc.jobs.get(job_id)
    if parent is None:
        raise NotFound(f"{field}: job {job_id} does not exist (or its record has expired)")
    if parent.status != "succeeded":
        if parent.status in ("queued", "running"):
            advice = f"wait until it has succeeded (poll GET /jobs/{job_id})"
        else:
            advice = "use a job that succeeded"
        raise Conflict(f"{field}: job {job_id} is {parent.status}, not succeeded: {advice}")
    return parent


def _content(svc: Services, job: JobRecord) -> dict[str, Any]:
    """What made a job's canonical image: its content ``seed`` and, when they were asked for, its ``labels`` (an
    edit's come from the job it edited)."""
    while "seed" not in job.params:
        if job.kind not in ("edit", "resample"):
            raise Conflict(
                f"canonical_from: job {job.id} is a {job.kind} job; its canonical image was not "
                "made by the generator, so there is no content code to sample new motion for. "
                "Resample a generate, resample or edit job instead",
            )
        job = _parent(
            svc,
            job,
            f"canonical_from: the job that made the canonical image of {job.id} has expired; "
            "generate a new video",
        )
    return {k: job.params[k] for k in ("seed", "labels") if job.params.get(k) is not None}


def _parent(svc: Services, job: JobRecord, expired: str) -> JobRecord:
    """The job a job was made from, or a Conflict saying `expired` when it is gone."""
    parent = svc.jobs.get(job.parent_id) if job.parent_id else None
    if parent is None:
        raise Conflict(expired)
    return parent


def _random_seed() -> int:
    return secrets.randbelow(RANDOM_SEED_BOUND)


def _frame_limit(num_frames: int, limit: int, field: tuple[str, str], whose: str) -> None:
    if num_frames > limit:
        raise Invalid(f"Input should be less than or equal to {limit} ({whose})", field, num_frames)


def _model(svc: Services, name: str | None) -> ModelInfo:
    """The served model called ``name`` (None: the default), or Invalid naming the choices."""
    models = svc.models.models()
    wanted = name or svc.models.default_name(models)
    found = next((m for m in models if m.name == wanted), None)
    if found is None:
        choices = ", ".join(m.name for m in models) or "none (GENDEF_MODELS_DIR holds no checkpoint)"
        what = f"no model named {name!r} is served" if name else "the default model is not served"
        raise Invalid(f"{what}; choose one of: {choices} (GET /models)", ("body", "model"), name)
    return found


def _parent_model(svc: Services, parent: JobRecord, field: str = "canonical_from") -> ModelInfo:
    """The model that made a job's canonical image, still served at that version, or Conflict (a job recorded
    without a model ran on the default one)."""
    name, version = parent.params.get("model"), parent.params.get("version")
    served = _model(svc, None) if name is None else svc.models.get(name)
    if served is None or (version is not None and served.version != version):
        now = "is no longer served" if served is None else f"is now version {served.version}"
        raise Conflict(
            f"{field}: job {parent.id} was made by version {version} of model {name}, which {now}; "
            "generate a new video",
        )
    return served


def _labels(model: ModelInfo, labels: list[int] | None) -> dict[str, list[int]]:
    """{"labels": sorted} of labels a request asks the model for ({} for none), or Invalid naming its classes."""
    if labels is None:
        return {}
    classes, count = model.classes, model.labels_per_video
    if not classes:
        raise Invalid(
            f"model {model.name} is unconditional: it takes no labels; leave labels out (GET /models)",
            ("body", "labels"),
            labels,
        )
    names = ", ".join(f"{i} ({name!r})" if name != str(i) else name for i, name in enumerate(classes))
    if len(labels) != count or len(set(labels)) != count or not all(0 <= x < len(classes) for x in labels):
        raise Invalid(
            f"model {model.name} takes {count} distinct labels, each the index of one of its classes: {names}",
            ("body", "labels"),
            labels,
        )
    return {"labels": sorted(labels)}


def _made_by(model: ModelInfo) -> dict[str, str]:
    return {"model": model.name, "version": model.version}


def _inherited(parent: JobRecord) -> dict[str, Any]:
    """The model and version of the job a job builds on (none for a decompose job's artifacts)."""
    return {k: parent.params[k] for k in ("model", "version") if k in parent.params}


def submit_generate(svc: Services, req: GenerateRequest) -> JobRecord:
    webhook = webhook_spec(svc.settings, req.webhook and str(req.webhook), req.webhook_events, "body")
    motion_seed = _random_seed() if req.motion_seed is None else req.motion_seed
    params = {"motion_seed": motion_seed, "num_frames": req.num_frames, "fps": req.fps}
    if req.canonical_from is None:
        model = _model(svc, req.model)
        _frame_limit(
            req.num_frames, model.max_frames, ("body", "num_frames"), f"the frame limit of {model.name}"
        )
        seed = _random_seed() if req.seed is None else req.seed
        params = _made_by(model) | {"seed": seed} | _labels(model, req.labels) | params
        return _queue(svc, "generate", params, webhook=webhook)
    for field, value in (("seed", req.seed), ("labels", req.labels)):
        if value is not None:
            raise Invalid(
                f"{field} cannot be combined with canonical_from: a resample keeps the canonical image of that job "
                f"and the content seed and labels it was made with; leave {field} out",
                ("body", field),
                value,
            )
    parent = finished_parent(svc, req.canonical_from, "canonical_from")
    content = _content(svc, parent)
    model = _parent_model(svc, parent)
    if req.model is not None and req.model != model.name:
        raise Invalid(
            f"a resample uses the model of the job it resamples, {model.name}; leave model out",
            ("body", "model"),
            req.model,
        )
    _frame_limit(req.num_frames, model.max_frames, ("body", "num_frames"), f"the frame limit of {model.name}")
    params = _made_by(model) | content | params
    return _queue(svc, "resample", params, parent_id=parent.id, webhook=webhook)


def parent_artifact(svc: Services, parent: JobRecord, name: str) -> bytes:
    """The bytes of a stored artifact of the job a request builds on, or Conflict that says it is gone."""
    artifact = parent.artifacts.get(name)
    try:
        data = svc.blobs.get(artifact.key) if artifact else None
    except BlobNotFound:
        data = None
    if data is None:
        raise Conflict(
            f"job_id: the {name} of job {parent.id} is no longer stored; start again from a new job"
        )
    return data


def _canonical_size(svc: Services, parent: JobRecord) -> tuple[int, int]:
    return image_size(parent_artifact(svc, parent, "canonical"))  # header only


def _shot(svc: Services, parent: JobRecord, shot: int | None, loc: str) -> dict[str, int] | None:
    """Shot `shot` of a job ({start, frames, x, width}: core.artifacts.shots_of), None for all of it, or Invalid
    naming the shots there are."""
    if shot is None:
        return None
    data = parent_artifact(svc, parent, "deformation")
    try:
        shots = shots_of(fields_meta(data), fields_shape(data)[0], _canonical_size(svc, parent)[0])
    except ArtifactError as e:
        raise Conflict(f"job_id: the deformation of job {parent.id} is unreadable ({e})") from e
    if shot >= len(shots):
        raise Invalid(
            f"job {parent.id} has {len(shots)} shot(s): shot must be 0 to {len(shots) - 1} (or left out for all)",
            (loc, "shot"),
            shot,
        )
    return shots[shot]


def _shot_size(svc: Services, parent: JobRecord, shot: dict[str, int] | None) -> tuple[int, int]:
    """(width, height) of the canonical image of a shot (None: of the whole job)."""
    width, height = _canonical_size(svc, parent)
    return (width, height) if shot is None else (shot["width"], height)


def same_shape(width: int, height: int, size: tuple[int, int]) -> bool:
    """Whether an image width x height is the canonical image's size (width, height) scaled: their aspects agree
    within ASPECT_TOLERANCE (relative), what rounding a scaled size to whole pixels allows."""
    return abs(width * size[1] - height * size[0]) <= ASPECT_TOLERANCE * height * size[0]


def submit_edit(
    svc: Services,
    job_id: str,
    image: bytes,
    fps: int | None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    shot: int | None = None,
    carry: bool = False,
) -> JobRecord:
    """Check the parent and the upload, store the upload as the job's input, then queue. The worker resizes."""
    webhook = webhook_spec(svc.settings, webhook_url, webhook_events, "form")
    if carry and shot is None:
        raise Invalid(
            "carry takes the paint of one shot's image on to the other segments of that shot: give shot too",
            ("body", "carry"),
            carry,
        )
    parent = finished_parent(svc, job_id, "job_id")
    if len(image) > svc.settings.max_upload_bytes:
        raise TooLarge(f"image is larger than the limit of {svc.settings.max_upload_bytes} bytes")
    info = check_image(image, svc.settings.max_upload_pixels)
    size = _shot_size(svc, parent, _shot(svc, parent, shot, "body"))
    if not same_shape(info.width, info.height, size):
        whose = "the canonical image" if shot is None else f"shot {shot}'s canonical image"
        raise Invalid(
            f"image is {info.width}x{info.height}, but {whose} is {size[0]}x{size[1]} (width / height "
            f"{size[0] / size[1]:.3g}): send it at that size (or scaled, the same shape); a decomposed clip's "
            "canonical image is a panorama of its own shape",
            ("body", "image"),
            f"{info.width}x{info.height}",
        )
    params = _inherited(parent) | {
        "fps": parent_fps(parent) if fps is None else fps,
        "resized": (info.width, info.height) != size,
        "source_size": [info.width, info.height],
        "shot": shot,
        "carry": carry,
    }
    upload = Upload("image", f"image.{info.extension}", image, CONTENT_TYPES[info.format])
    return _queue(svc, "edit", params, parent_id=parent.id, upload=upload, webhook=webhook)


def field_parent(svc: Services, job_id: str) -> JobRecord:
    parent = finished_parent(svc, job_id, "job_id")
    if parent.kind not in FIELD_KINDS:
        raise Conflict(
            f"job_id: job {job_id} is a {parent.kind} job, which has no deformation fields; "
            f"use a {', '.join(FIELD_KINDS)} job",
        )
    return parent


def _outside(points: list[tuple[float, float]], width: int, height: int) -> list[int]:
    return [
        i for i, (x, y) in enumerate(points) if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5)
    ]


def submit_track(svc: Services, req: TrackRequest) -> JobRecord:
    parent = field_parent(svc, req.job_id)
    shot = _shot(svc, parent, req.shot, "body")
    of = f"job {parent.id}" if shot is None else f"shot {req.shot} of job {parent.id}"
    if req.frame is None:
        width, height = _shot_size(svc, parent, shot)
        where = f"the canonical image of {of}"
    else:
        frames, height, width = fields_shape(parent_artifact(svc, parent, "deformation"))
        frames = frames if shot is None else shot["frames"]
        if req.frame >= frames:
            raise Invalid(
                f"{of} has {frames} frames: frame must be 0 to {frames - 1}",
                ("body", "frame"),
                req.frame,
            )
        where = f"frame {req.frame} of {of}"
    outside = _outside(req.points, width, height)
    if outside:
        raise Invalid(
            f"{len(outside)} point(s) lie outside {where}, which is {width}x{height}: x must be in "
            f"[-0.5, {width - 0.5}] and y in [-0.5, {height - 0.5}] (first: index {outside[0]})",
            ("body", "points", outside[0]),
            list(req.points[outside[0]]),
        )
    params = _inherited(parent) | {
        "points": [list(p) for p in req.points],
        "frame": req.frame,
        "shot": req.shot,
        "fps": parent_fps(parent),
    }
    return _queue(svc, "track", params, parent_id=parent.id)


def submit_segment(svc: Services, job_id: str, mask: bytes, shot: int | None = None) -> JobRecord:
    parent = field_parent(svc, job_id)
    if len(mask) > svc.settings.max_upload_bytes:
        raise TooLarge(f"mask is larger than the limit of {svc.settings.max_upload_bytes} bytes")
    info = check_image(mask, svc.settings.max_upload_pixels)
    if info.format != "PNG":
        raise UnsupportedFormat("mask must be a PNG: JPEG compression would change the labels at their edges")
    mode = image_mode(mask)  # header only
    if mode not in MASK_MODES:
        raise Invalid(
            f"mask is a {mode} PNG; it must have one channel whose values are the labels "
            "(grayscale 'L', palette 'P' or 1-bit): e.g. 0 background, 1, 2 ... objects",
        )
    size = _shot_size(svc, parent, _shot(svc, parent, shot, "body"))
    if (info.width, info.height) != size:
        of = f"job {parent.id}" if shot is None else f"shot {shot} of job {parent.id}"
        raise Invalid(
            f"mask is {info.width}x{info.height}; the canonical image of {of} is "
            f"{size[0]}x{size[1]}: draw the mask on that image, at its size",
        )
    return _queue(
        svc,
        "segment",
        _inherited(parent) | {"fps": parent_fps(parent), "shot": shot},
        parent_id=parent.id,
        upload=Upload("mask", "mask.png", mask, "image/png"),
    )


def submit_decompose(
    svc: Services,
    video: bytes,
    num_frames: int,
    resolution: int,
    steps: int,
    fps: int | None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> JobRecord:
    webhook = webhook_spec(svc.settings, webhook_url, webhook_events, "form")
    limit = svc.settings.max_decompose_frames
    _frame_limit(num_frames, limit, ("body", "num_frames"), "this deployment's limit of frames to decompose")
    if resolution > svc.settings.max_decompose_resolution:
        raise Invalid(
            f"Input should be less than or equal to {svc.settings.max_decompose_resolution} (this deployment's "
            "largest long side to decompose at, in pixels)",
            ("body", "resolution"),
            resolution,
        )
    info = check_video(video, num_frames, svc.settings)
    params = {
        "num_frames": num_frames,
        "resolution": resolution,
        "steps": steps,
        "fps": fps if fps is not None else min(MAX_FPS, max(MIN_FPS, round(info.fps or DEFAULT_FPS))),
        "source": {
            "container": info.container,
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": info.duration_s,
        },
    }
    upload = Upload("video", f"video.{info.extension}", video, info.content_type)
    return _queue(svc, "decompose", params, upload=upload, webhook=webhook)


def _fields_origin(svc: Services, job: JobRecord) -> JobRecord:
    """The job that made a job's fields: an edit reuses its source's."""
    while job.kind == "edit":
        job = _parent(
            svc,
            job,
            f"job_id: the job whose fields edit {job.id} reuses has expired, so its motion cannot be "
            "sampled between frames; render it with fps_factor 1",
        )
    return job


def submit_render(
    svc: Services, job_id: str, scale: int, fps_factor: int, fps: int | None, image: bytes | None
) -> JobRecord:
    """Check the parent, the output's size against the render limits and the optional canonical image, then
    queue. A generated video sampled between its frames needs its model (still served at its version)."""
    parent = field_parent(svc, job_id)
    frames, height, width = fields_shape(parent_artifact(svc, parent, "deformation"))
    pixels = height * width * scale * scale
    if pixels > svc.settings.max_render_pixels:
        raise Invalid(
            f"scale {scale} makes frames of {width * scale}x{height * scale} = {pixels} pixels; the limit is "
            f"{svc.settings.max_render_pixels} (GENDEF_MAX_RENDER_PIXELS): ask for a smaller scale",
            ("body", "scale"),
            scale,
        )
    if frames * fps_factor > svc.settings.max_render_frames:
        raise Invalid(
            f"fps_factor {fps_factor} makes {frames * fps_factor} frames of job {parent.id}'s {frames}; the "
            f"limit is {svc.settings.max_render_frames} (GENDEF_MAX_RENDER_FRAMES): ask for a smaller factor",
            ("body", "fps_factor"),
            fps_factor,
        )
    params: dict[str, Any] = _inherited(parent) | {
        "scale": scale,
        "fps_factor": fps_factor,
        "fps": min(MAX_RENDER_FPS, parent_fps(parent) * fps_factor) if fps is None else fps,
        "motion": None,
    }
    origin = _fields_origin(svc, parent) if fps_factor > 1 else parent
    if fps_factor > 1 and origin.kind in ("generate", "resample"):
        model = _parent_model(svc, origin, "job_id")
        params |= _made_by(model) | {
            "motion": _content(svc, origin) | {"motion_seed": origin.params["motion_seed"]}
        }
    upload = None
    if image is not None:
        if len(image) > svc.settings.max_upload_bytes:
            raise TooLarge(f"image is larger than the limit of {svc.settings.max_upload_bytes} bytes")
        info = check_image(image, svc.settings.max_upload_pixels)
        cw, ch = _canonical_size(svc, parent)
        if not same_shape(info.width, info.height, (cw, ch)):
            raise Invalid(
                f"image is {info.width}x{info.height}; the canonical image of job {parent.id} is {cw}x{ch}: "
                "upload one of the same shape (any size: e.g. it scaled up and painted on)",
                ("body", "image"),
                f"{info.width}x{info.height}",
            )
        params["source_size"] = [info.width, info.height]
        upload = Upload("image", f"image.{info.extension}", image, CONTENT_TYPES[info.format])
    return _queue(svc, "render", params, parent_id=parent.id, upload=upload)
