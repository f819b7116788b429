"""The FastAPI app: ``uvicorn --factory service.app:create_app`` (settings from GENDEF_* variables)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from core.jobs import IdempotencyRecords
from core.settings import Settings, get_settings
from service import errors
from service.deps import Services
from service.idempotency import Idempotency
from service.monitoring import Readiness, metrics_registry
from service.routes import decomposition, events, files, jobs, models, ops, page, rendering, tracking
from service.uploads import BodySizeLimit, body_limits

log = logging.getLogger(__name__)


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
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(tracking.router)
    app.include_router(decomposition.router)
    app.include_router(rendering.router)
    app.include_router(ops.router)
    app.include_router(events.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files, name="static")
    if settings.storage_backend == "local":
        app.include_router(files.router)
    # Idempotency is added first, so it runs inside the body size limit (it reads the body); each route's limit is
    # the one its own fields declare (service/uploads.py).
    app.add_middleware(
        Idempotency,
        records=IdempotencyRecords(svc.redis, settings.idempotency_ttl_s),
        api_key_hashes=settings.api_key_hashes,
    )
    app.add_middleware(BodySizeLimit, limits=body_limits(app.openapi(), settings))
    return app
