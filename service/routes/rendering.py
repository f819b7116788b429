"""POST /render: a finished job rendered at more pixels per frame and more frames per second, a job like
/generate's (202, Location, the job document)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, UploadFile

from core.documents import JobDocument
from service.deps import ServicesDep
from service.limits import (
    DEFAULT_FPS_FACTOR,
    DEFAULT_SCALE,
    MAX_FPS_FACTOR,
    MAX_ID_CHARS,
    MAX_RENDER_FPS,
    MAX_SCALE,
    MIN_FPS,
)
from service.routes.jobs import UPLOAD_ERRORS, accepted
from service.submit import submit_render
from service.uploads import upload_file

router = APIRouter(tags=["applications"])


@router.post("/render", status_code=202, response_model=JobDocument, responses=UPLOAD_ERRORS)
def render(
    job_id: Annotated[
        str,
        Form(min_length=1, max_length=MAX_ID_CHARS, description="a finished job with fields, rendered anew"),
    ],
    svc: ServicesDep,
    request: Request,
    response: Response,
    scale: Annotated[
        int, Form(ge=1, le=MAX_SCALE, description="times the width and height of the frames")
    ] = DEFAULT_SCALE,
    fps_factor: Annotated[
        int,
        Form(
            ge=1,
            le=MAX_FPS_FACTOR,
            description="times the frames: frame j is at time j / fps_factor, so frame j * fps_factor is "
            "frame j of the job",
        ),
    ] = DEFAULT_FPS_FACTOR,
    fps: Annotated[
        int | None, Form(ge=MIN_FPS, le=MAX_RENDER_FPS, description="default: the job's times fps_factor")
    ] = None,
    image: Annotated[
        UploadFile | None,
        upload_file(
            "max_upload_bytes",
            "a canonical image to render instead of the job's upscaled one (PNG or JPEG, its shape, any size: "
            "paint at a high resolution and the frames keep the detail)",
        ),
    ] = None,
) -> JobDocument:
    """Queue a render of job ``job_id`` beyond its fields' grid: the fields upsampled ``scale`` times and the
    canonical image upscaled (or ``image``); ``fps_factor`` times the frames, a generated video's motion sampled
    between its frames, a decomposed one's fields interpolated within each shot. Artifacts: ``video`` and
    ``canonical`` (the image rendered)."""
    data = image.file.read(svc.settings.max_upload_bytes + 1) if image is not None else None
    job = submit_render(svc, job_id, scale, fps_factor, fps, data)
    return accepted(svc, request, response, job)
