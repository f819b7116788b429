"""The FastAPI app: ``uvicorn --factory service.app:create_app`` (settings from GENDEF_* variables)."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError

from service.deps import Services
from service.idempotency import Idempotency
from service.monitoring import Readiness, metrics_registry
from service.routes import apps as application_routes
from service.routes import events, files, jobs, ops, page
from service.settings import Settings, get_settings
from service.storage import StorageUnavailable
from service.uploads import BodySizeLimit, UploadRejected

log = logging.getLogger(__name__)

JSON_BODY_LIMIT = 64 * 1024  # every body but /edit's is a small JSON document
MULTIPART_OVERHEAD = 64 * 1024  # /edit: the form's other fields and part headers, on top of the image

UNAVAILABLE = {
    redis.exceptions.ConnectionError: "the job store (Redis) is unreachable",
    redis.exceptions.TimeoutError: "the job store (Redis) did not answer in time",
    OperationalError: "the job queue (Redis) is unreachable",
    StorageUnavailable: "the artifact store is unavailable",
}


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = next(text for cls, text in UNAVAILABLE.items() if isinstance(exc, cls))
    log.warning("%s %s: %s (%s)", request.method, request.url.path, reason, exc)
    return JSONResponse(
        {"detail": f"{reason}; try again in a few seconds"}, status_code=503, headers={"Retry-After": "5"}
    )


def _rejected(request: Request, exc: UploadRejected) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    svc = Services.from_settings(settings)
    app = FastAPI(
        title="gendef-serve",
        version="0.1.0",
        description="GenDeF video generation: generate, resample motion, edit by painting on the canonical image. "
        "Every job runs on a worker; poll GET /jobs/{id} for its status and artifact URLs.",
    )
    app.state.services = svc
    app.state.readiness = Readiness(svc)
    app.state.metrics = metrics_registry(svc)
    # Added first, so it runs inside the body size limit.
    app.add_middleware(Idempotency, redis_client=svc.redis, ttl_s=settings.idempotency_ttl_s)
    app.add_middleware(
        BodySizeLimit,
        default=JSON_BODY_LIMIT,
        limits={
            "/edit": settings.max_upload_bytes + MULTIPART_OVERHEAD,
            "/segment": settings.max_upload_bytes + MULTIPART_OVERHEAD,
            "/decompose": settings.max_video_bytes + MULTIPART_OVERHEAD,
        },
    )
    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)
    app.add_exception_handler(UploadRejected, _rejected)
    app.include_router(jobs.router)
    app.include_router(application_routes.router)
    app.include_router(ops.router)
    app.include_router(events.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files, name="static")
    if settings.storage_backend == "local":
        app.include_router(files.router)
    return app
