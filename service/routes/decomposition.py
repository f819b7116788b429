"""POST /decompose: your own video as a canonical image and fields, a job like /generate's (202, Location, the job
document)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, UploadFile

from core.documents import JobDocument
from service.deps import ServicesDep
from service.limits import (
    DECOMPOSE_FRAMES,
    DECOMPOSE_RESOLUTION,
    DECOMPOSE_STEPS,
    MAX_DECOMPOSE_STEPS,
    MAX_FPS,
    MIN_DECOMPOSE_FRAMES,
    MIN_DECOMPOSE_RESOLUTION,
    MIN_FPS,
)
from service.routes.jobs import UPLOAD_ERRORS, WebhookEventsForm, WebhookForm, accepted
from service.submit import submit_decompose
from service.uploads import upload_file

router = APIRouter(tags=["applications"])


@router.post("/decompose", status_code=202, response_model=JobDocument, responses=UPLOAD_ERRORS)
def decompose(
    video: Annotated[
        UploadFile,
        upload_file("max_video_bytes", "an mp4, webm or gif; its first num_frames frames are used"),
    ],
    svc: ServicesDep,
    request: Request,
    response: Response,
    num_frames: Annotated[
        int,
        Form(
            ge=MIN_DECOMPOSE_FRAMES,
            description="frames taken from the start (at most GENDEF_MAX_DECOMPOSE_FRAMES)",
        ),
    ] = DECOMPOSE_FRAMES,
    resolution: Annotated[
        int,
        Form(
            ge=MIN_DECOMPOSE_RESOLUTION,
            description="long side of the frames, in pixels (at most GENDEF_MAX_DECOMPOSE_RESOLUTION)",
        ),
    ] = DECOMPOSE_RESOLUTION,
    steps: Annotated[
        int, Form(ge=1, le=MAX_DECOMPOSE_STEPS, description="optimisation steps (more: sharper, slower)")
    ] = DECOMPOSE_STEPS,
    fps: Annotated[int | None, Form(ge=MIN_FPS, le=MAX_FPS, description="default: the video's")] = None,
    webhook: WebhookForm = None,
    webhook_events: WebhookEventsForm = None,
) -> JobDocument:
    """Queue the decomposition of your own video into a canonical image and deformation fields, fitted by
    optimisation. The job reports progress and ``result.psnr_db`` (reconstruction PSNR) as it goes; its
    artifacts are those of /generate, so /edit, /track, /segment and /render work on it. A clip with cuts is
    split into shots, each with its own canonical image (side by side in canonical.png)."""
    data = video.file.read(svc.settings.max_video_bytes + 1)
    job = submit_decompose(
        svc, data, num_frames, resolution, steps, fps, webhook and str(webhook), webhook_events
    )
    return accepted(svc, request, response, job)
