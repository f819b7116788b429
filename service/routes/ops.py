"""GET /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.schemas import ReadinessReport

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (it checks nothing else)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadinessReport, responses={503: {"model": ReadinessReport}})
def readyz(request: Request, response: Response) -> ReadinessReport:
    """Ready when Redis answers, the store is usable and at least one worker answers a ping."""
    ready, checks = request.app.state.readiness.check()
    response.status_code = 200 if ready else 503
    return ReadinessReport(ready=ready, checks=checks)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
