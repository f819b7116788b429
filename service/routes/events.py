"""GET /jobs/{id}/events: the job document as Server-Sent Events until the job ends.

The stream reads the job record every GENDEF_EVENTS_POLL_S rather than subscribing to Redis pub/sub: the record is
the source of truth and already changes on every status and progress step, polling needs no extra Redis
connection per client nor a publish in every writer (API, workers, other tools), and queue_position changes when
*other* jobs leave the queue, which no message about this job would announce.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from core.documents import JobDocument
from core.jobs import FINAL, JobRecord
from service.deps import JobDep, Services, ServicesDep
from service.schemas import Message

router = APIRouter(tags=["jobs"])

RECONNECT_MS = 2000  # how long an EventSource waits before it reconnects after a dropped connection


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


async def _stream(svc: Services, request: Request, job: JobRecord) -> AsyncIterator[bytes]:
    presign = svc.presigner(request)
    settings = svc.settings
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    last_state = None
    last_sent = time.monotonic()
    while True:
        position = await run_in_threadpool(svc.jobs.queue_position, job)
        state = (job.status, job.progress, job.stage, position)
        if state != last_state:
            document = JobDocument.from_record(job, presign, position).model_dump_json()
            yield _event("final" if job.status in FINAL else "update", document)
            if job.status in FINAL:
                return
            last_state, last_sent = state, time.monotonic()
        elif time.monotonic() - last_sent >= settings.events_heartbeat_s:
            yield b": heartbeat\n\n"  # a comment: keeps proxies from closing an idle connection
            last_sent = time.monotonic()
        await asyncio.sleep(settings.events_poll_s)
        current = await run_in_threadpool(svc.jobs.get, job.id)
        if current is None:
            yield _event("error", json.dumps({"detail": f"the record of job {job.id} has expired"}))
            return
        job = current


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: update` with the job document at once and at each change of status, progress, stage or "
            "queue_position; `event: final` with the document of the ended job, then the stream closes. A "
            "`: heartbeat` comment every GENDEF_EVENTS_HEARTBEAT_S while nothing changes.",
        },
        404: {"model": Message, "description": "no such job"},
    },
)
def job_events(job: JobDep, svc: ServicesDep, request: Request) -> StreamingResponse:
    """Follow a job live (for a browser: `new EventSource("/jobs/{id}/events")`)."""
    return StreamingResponse(
        _stream(svc, request, job),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },  # no buffering in nginx and the like
    )
