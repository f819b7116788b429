"""POST /track, POST /segment, POST /decompose: jobs like /generate's (202, Location, the job document)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from service.apps import TrackRequest, submit_decompose, submit_segment, submit_track
from service.deps import ServicesDep
from service.routes.jobs import SUBMIT_ERRORS, _accepted
from service.schemas import MAX_FPS, MIN_FPS, JobDocument, Message

router = APIRouter(tags=["applications"])

UPLOAD_ERRORS = SUBMIT_ERRORS | {
    415: {"model": Message, "description": "the upload is not of an accepted format"},
}
DECOMPOSE_STEPS = 600  # default optimisation steps: about 30 dB on real clips of 32 frames at 128 px (README)


@router.post("/track", status_code=202, response_model=JobDocument, responses=SUBMIT_ERRORS)
def track(body: TrackRequest, svc: ServicesDep, request: Request, response: Response) -> JobDocument:
    """Queue point tracking: where each point of the canonical image (or of frame ``frame``) is in every frame
    of job ``job_id``, and whether it is visible there. Artifacts: ``tracks`` (tracks.json, ``[T][N] -> {x, y,
    visible}`` in frame pixels) and ``video`` (the video with the tracks drawn)."""
    return _accepted(svc, request, response, submit_track(svc, body))


@router.post("/segment", status_code=202, response_model=JobDocument, responses=UPLOAD_ERRORS)
def segment(
    job_id: Annotated[
        str, Form(min_length=1, max_length=64, description="a finished job whose fields are used")
    ],
    mask: Annotated[
        UploadFile,
        File(
            description="PNG label map (grayscale, palette or 1-bit) the size of the "
            "job's canonical image: 0 background, 1, 2 ... labels"
        ),
    ],
    svc: ServicesDep,
    request: Request,
    response: Response,
) -> JobDocument:
    """Queue mask propagation: each frame's labels are the mask sampled through that frame's field (nearest,
    so labels stay labels). Artifacts: ``masks`` (masks.npz, ``masks`` uint8 (T, H, W)) and ``video`` (an
    overlay of the labels on the frames)."""
    data = mask.file.read(svc.settings.max_upload_bytes + 1)
    return _accepted(svc, request, response, submit_segment(svc, job_id, data))


@router.post("/decompose", status_code=202, response_model=JobDocument, responses=UPLOAD_ERRORS)
def decompose(
    video: Annotated[
        UploadFile, File(description="an mp4, webm or gif; its first num_frames frames are used")
    ],
    svc: ServicesDep,
    request: Request,
    response: Response,
    num_frames: Annotated[int, Form(ge=2, description="frames taken from the start of the video")] = 32,
    resolution: Annotated[int, Form(ge=16, le=512, description="long side of the frames, in pixels")] = 128,
    steps: Annotated[int, Form(ge=1, le=20000, description="optimisation steps (more: sharper, slower)")] = (
        DECOMPOSE_STEPS
    ),
    fps: Annotated[int | None, Form(ge=MIN_FPS, le=MAX_FPS, description="default: the video's")] = None,
) -> JobDocument:
    """Queue the decomposition of your own video into a canonical image and deformation fields, fitted by
    optimisation. The job reports progress and ``result.psnr_db`` (reconstruction PSNR) as it goes; its
    artifacts are those of /generate, so /edit, /track and /segment work on it."""
    data = video.file.read(svc.settings.max_video_bytes + 1)
    job = submit_decompose(svc, data, num_frames, resolution, steps, fps)
    return _accepted(svc, request, response, job)
