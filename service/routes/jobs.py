"""POST /generate, POST /edit, GET /jobs/{id}, POST /jobs/{id}/cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, UploadFile
from pydantic import HttpUrl

from core.documents import JobDocument
from core.jobs import JobRecord
from service.deps import JobDep, ServicesDep
from service.limits import MAX_FPS, MAX_ID_CHARS, MIN_FPS
from service.schemas import GenerateRequest, Message, WebhookEvent
from service.submit import submit_edit, submit_generate
from service.uploads import upload_file

router = APIRouter(tags=["jobs"])

# The webhook fields of a multipart form (/edit, /decompose); /generate's JSON body has the same two.
WebhookForm = Annotated[HttpUrl | None, Form(description="http(s) URL POSTed the job document on its events")]
WebhookEventsForm = Annotated[
    list[WebhookEvent] | None, Form(description="repeat the field per event (default: completed)")
]

NOT_FOUND = {404: {"model": Message, "description": "no such job"}}
UNAVAILABLE = {
    503: {"model": Message, "description": "Redis or the store is unreachable; try again"},
    401: {
        "model": Message,
        "description": "API keys are on (GENDEF_API_KEYS) and no valid bearer key was sent",
    },
}
SUBMIT_ERRORS = (
    NOT_FOUND
    | UNAVAILABLE
    | {
        409: {
            "model": Message,
            "description": "the job named (canonical_from, job_id) has not succeeded, or a request "
            "with the same Idempotency-Key is still in progress",
        },
        413: {"model": Message, "description": "request body too large"},
        400: {"model": Message, "description": "malformed Idempotency-Key header"},
        429: {
            "model": Message,
            "description": "this API key has its limit of queued and running jobs (Retry-After)",
        },
    }
)

UPLOAD_ERRORS = SUBMIT_ERRORS | {
    415: {"model": Message, "description": "the upload is not of an accepted format"},
}


def accepted(svc: ServicesDep, request: Request, response: Response, job: JobRecord) -> JobDocument:
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobDocument.from_record(job, svc.presigner(request), svc.jobs.queue_position(job))


@router.post("/generate", status_code=202, response_model=JobDocument, responses=SUBMIT_ERRORS)
def generate(body: GenerateRequest, svc: ServicesDep, request: Request, response: Response) -> JobDocument:
    """Queue a video: a new one (kind generate), or new motion for a finished job's canonical image
    (``canonical_from``, kind resample)."""
    return accepted(svc, request, response, submit_generate(svc, body))


@router.post(
    "/edit",
    status_code=202,
    response_model=JobDocument,
    responses=SUBMIT_ERRORS | {415: {"model": Message, "description": "the image is not a PNG or JPEG"}},
)
def edit(
    job_id: Annotated[
        str, Form(min_length=1, max_length=MAX_ID_CHARS, description="a finished job whose fields are reused")
    ],
    image: Annotated[UploadFile, upload_file("max_upload_bytes", "the edited canonical image, PNG or JPEG")],
    svc: ServicesDep,
    request: Request,
    response: Response,
    fps: Annotated[int | None, Form(ge=MIN_FPS, le=MAX_FPS, description="default: the source job's")] = None,
    webhook: WebhookForm = None,
    webhook_events: WebhookEventsForm = None,
    shot: Annotated[
        int | None,
        Form(
            ge=0,
            description="a decomposed clip's shot (0-based): the image is that shot's canonical image and only "
            "its frames change; default: the image is the whole canonical image (every shot's, side by side)",
        ),
    ] = None,
    carry: Annotated[
        bool,
        Form(
            description="with shot, one segment of a long shot: carry the paint on to the shot's other segments "
            "through the frames where the video switches between them"
        ),
    ] = False,
) -> JobDocument:
    """Queue an edit: the image is warped by the fields of job ``job_id``, so every frame carries the edit.
    An image of another size than the canonical image (or the shot's) but its shape is resized to it
    (``params.resized``); one of another shape is refused (422): a decomposed clip's canonical image is a panorama
    of its own shape."""
    data = image.file.read(svc.settings.max_upload_bytes + 1)
    job = submit_edit(svc, job_id, data, fps, webhook and str(webhook), webhook_events, shot, carry)
    return accepted(svc, request, response, job)


@router.get("/jobs/{job_id}", response_model=JobDocument, responses=NOT_FOUND | UNAVAILABLE)
def get_job(job: JobDep, svc: ServicesDep, request: Request) -> JobDocument:
    """The job document; artifact URLs are signed afresh at each call."""
    return JobDocument.from_record(job, svc.presigner(request), svc.jobs.queue_position(job))


@router.post("/jobs/{job_id}/cancel", response_model=JobDocument, responses=NOT_FOUND | UNAVAILABLE)
def cancel_job(job: JobDep, svc: ServicesDep, request: Request) -> JobDocument:
    """A queued job is canceled at once; a running one stops at its next step (status turns canceled then);
    a finished job is returned unchanged."""
    return JobDocument.from_record(svc.jobs.cancel(job.id) or job, svc.presigner(request))
