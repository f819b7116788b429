"""Turning track, segment and decompose requests into queued jobs (the applications of explicit fields)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from service.deps import Services
from service.jobs import JobRecord
from service.schemas import MAX_FPS, MIN_FPS
from service.submit import Upload, _canonical_size, _queue, finished_parent, parent_artifact, parent_fps
from service.uploads import UploadRejected, check_image
from service.video import check_video

# Jobs whose artifacts are a canonical image and its fields: what edit, track and segment build on.
FIELD_KINDS = ("generate", "resample", "edit", "decompose")
MAX_POINTS = 256
MASK_MODES = ("1", "L", "P")  # one channel whose values are the labels


class TrackRequest(BaseModel):
    """POST /track: where points of the canonical image (or of frame `frame`) are in every frame."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(
        min_length=1,
        max_length=64,
        description="a finished generate, resample, edit or decompose job whose fields are used",
    )
    points: list[tuple[float, float]] = Field(
        min_length=1,
        max_length=MAX_POINTS,
        description="[x, y] pixel coordinates, pixel centres at integers (an "
        "image W wide spans x = -0.5 to W - 0.5), in the canonical image or, with `frame`, in that frame",
    )
    frame: int | None = Field(
        default=None,
        ge=0,
        description="give the points in this frame (0-based) instead of the canonical image",
    )


def field_parent(svc: Services, job_id: str) -> JobRecord:
    parent = finished_parent(svc, job_id, "job_id")
    if parent.kind not in FIELD_KINDS:
        raise HTTPException(
            409,
            f"job_id: job {job_id} is a {parent.kind} job, which has no deformation fields; "
            f"use a {', '.join(FIELD_KINDS)} job",
        )
    return parent


def fields_shape(svc: Services, parent: JobRecord) -> tuple[int, int, int]:
    """(T, H, W) of a job's stored fields, read from the .npy header inside its deformation.npz."""
    data = parent_artifact(svc, parent, "deformation")
    with zipfile.ZipFile(io.BytesIO(data)) as npz, npz.open("fields.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
        )
        shape, _, _ = read_header(f)
    return shape[0], shape[1], shape[2]


def _outside(points: list[tuple[float, float]], width: int, height: int) -> list[int]:
    return [
        i for i, (x, y) in enumerate(points) if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5)
    ]


def _invalid(loc: tuple, value: object, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "input": value, "msg": msg}])


def submit_track(svc: Services, req: TrackRequest) -> JobRecord:
    parent = field_parent(svc, req.job_id)
    if req.frame is None:
        width, height = _canonical_size(svc, parent)
        where = f"the canonical image of job {parent.id}"
    else:
        frames, height, width = fields_shape(svc, parent)
        if req.frame >= frames:
            raise _invalid(
                ("body", "frame"),
                req.frame,
                f"job {parent.id} has {frames} frames: frame must be 0 to {frames - 1}",
            )
        where = f"frame {req.frame} of job {parent.id}"
    outside = _outside(req.points, width, height)
    if outside:
        raise _invalid(
            ("body", "points", outside[0]),
            list(req.points[outside[0]]),
            f"{len(outside)} point(s) lie outside {where}, which is {width}x{height}: x must be in "
            f"[-0.5, {width - 0.5}] and y in [-0.5, {height - 0.5}] (first: index {outside[0]})",
        )
    params = {
        "points": [list(p) for p in req.points],
        "frame": req.frame,
        "fps": parent_fps(parent),
    }
    return _queue(svc, "track", params, parent_id=parent.id)


def submit_segment(svc: Services, job_id: str, mask: bytes) -> JobRecord:
    parent = field_parent(svc, job_id)
    if len(mask) > svc.settings.max_upload_bytes:
        raise HTTPException(413, f"mask is larger than the limit of {svc.settings.max_upload_bytes} bytes")
    info = check_image(mask, svc.settings.max_upload_pixels)
    if info.format != "PNG":
        raise UploadRejected(
            415, "mask must be a PNG: JPEG compression would change the labels at their edges"
        )
    mode = Image.open(io.BytesIO(mask)).mode  # header only
    if mode not in MASK_MODES:
        raise UploadRejected(
            422,
            f"mask is a {mode} PNG; it must have one channel whose values are the labels "
            "(grayscale 'L', palette 'P' or 1-bit): e.g. 0 background, 1, 2 ... objects",
        )
    size = _canonical_size(svc, parent)
    if (info.width, info.height) != size:
        raise UploadRejected(
            422,
            f"mask is {info.width}x{info.height}; the canonical image of job {parent.id} is "
            f"{size[0]}x{size[1]}: draw the mask on that image, at its size",
        )
    return _queue(
        svc,
        "segment",
        {"fps": parent_fps(parent)},
        parent_id=parent.id,
        upload=Upload("mask", "mask.png", mask, "image/png"),
    )


def submit_decompose(
    svc: Services, video: bytes, num_frames: int, resolution: int, steps: int, fps: int | None
) -> JobRecord:
    if num_frames > svc.settings.max_frames:
        raise _invalid(
            ("body", "num_frames"),
            num_frames,
            f"Input should be less than or equal to {svc.settings.max_frames} (this deployment's frame "
            "limit)",
        )
    info = check_video(video, svc.settings)
    params = {
        "num_frames": num_frames,
        "resolution": resolution,
        "steps": steps,
        "fps": fps if fps is not None else min(MAX_FPS, max(MIN_FPS, round(info.fps or 8))),
        "source": {
            "container": info.container,
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": info.duration_s,
        },
    }
    return _queue(
        svc, "decompose", params, upload=Upload("video", f"video.{info.extension}", video, info.content_type)
    )
