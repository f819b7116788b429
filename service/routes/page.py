"""The browser page: GET / and its static files under /static/ (service/static/, no build step), and the
canonical image of a job from this origin."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from core.errors import NotFound
from core.storage import BlobNotFound
from service.deps import JobDep, ServicesDep
from service.schemas import Message

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()
static_files = StaticFiles(directory=STATIC_DIR)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(
    "/jobs/{job_id}/canonical.png",
    tags=["jobs"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": Message}},
)
def canonical(job: JobDep, svc: ServicesDep) -> Response:
    """A succeeded job's canonical image from this origin: the page paints on it in a canvas, which a
    cross-origin image (a presigned S3 URL) would make unreadable."""
    artifact = job.artifacts.get("canonical") if job.status == "succeeded" else None
    if artifact is None:
        raise NotFound(f"job {job.id} has no canonical image (it has not succeeded)")
    try:
        data = svc.blobs.get(artifact.key)
    except BlobNotFound:
        raise NotFound(f"the canonical image of job {job.id} is no longer stored") from None
    return Response(
        data, media_type=artifact.content_type, headers={"Cache-Control": "private, max-age=3600"}
    )
