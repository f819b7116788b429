"""POST /track, POST /segment: jobs on a finished job's fields, like /generate's (202, Location, the job document)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, UploadFile

from core.documents import JobDocument
from service.deps import ServicesDep
from service.limits import MAX_ID_CHARS
from service.routes.jobs import SUBMIT_ERRORS, UPLOAD_ERRORS, accepted
from service.schemas import TrackRequest
from service.submit import submit_segment, submit_track
from service.uploads import upload_file

router = APIRouter(tags=["applications"])


@router.post("/track", status_code=202, response_model=JobDocument, responses=SUBMIT_ERRORS)
def track(body: TrackRequest, svc: ServicesDep, request: Request, response: Response) -> JobDocument:
    """Queue point tracking: where each point of the canonical image (or of frame ``frame``) is in every frame
    of job ``job_id``, and whether it is visible there. Artifacts: ``tracks`` (tracks.json, ``[T][N] -> {x, y,
    visible}`` in frame pixels) and ``video`` (the video with the tracks drawn)."""
    return accepted(svc, request, response, submit_track(svc, body))


@router.post("/segment", status_code=202, response_model=JobDocument, responses=UPLOAD_ERRORS)
def segment(
    job_id: Annotated[
        str, Form(min_length=1, max_length=MAX_ID_CHARS, description="a finished job whose fields are used")
    ],
    mask: Annotated[
        UploadFile,
        upload_file(
            "max_upload_bytes",
            "PNG label map (grayscale, palette or 1-bit) the size of the job's canonical image: 0 background, "
            "1, 2 ... labels",
        ),
    ],
    svc: ServicesDep,
    request: Request,
    response: Response,
    shot: Annotated[
        int | None,
        Form(
            ge=0,
            description="a decomposed clip's shot (0-based): the mask is the size of that shot's canonical image "
            "and the masks cover its frames; default: the whole video",
        ),
    ] = None,
) -> JobDocument:
    """Queue mask propagation: each frame's labels are the mask sampled through that frame's field (nearest,
    so labels stay labels). Artifacts: ``masks`` (masks.npz, ``masks`` uint8 (T, H, W)) and ``video`` (an
    overlay of the labels on the frames)."""
    data = mask.file.read(svc.settings.max_upload_bytes + 1)
    return accepted(svc, request, response, submit_segment(svc, job_id, data, shot))
