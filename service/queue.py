"""The API's side of Celery: send tasks by name (no worker code imported), queue depths, worker pings."""

from __future__ import annotations

from celery import Celery

from service.jobs import JobRecord
from service.settings import Settings

TASK_NAMES = {
    "generate": "gendef.generate",
    "resample": "gendef.resample",
    "edit": "gendef.edit",
    "track": "gendef.track",
    "segment": "gendef.segment",
    "decompose": "gendef.decompose",
}
EDIT_QUEUE_KINDS = ("edit", "track", "segment")  # no generator, little compute: the edit queue's workers


def make_celery(settings: Settings) -> Celery:
    app = Celery("gendef-api", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_connection_timeout=2,
        # Fail a request in about a second when Redis is down, rather than retrying for long.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.3,
            "interval_max": 0.5,
        },
    )
    return app


def queue_of(settings: Settings, kind: str) -> str:
    """Generate, resample and decompose (an optimisation) are heavy; edit, track and segment only read fields
    and may be served by other (CPU) workers."""
    return settings.edit_queue if kind in EDIT_QUEUE_KINDS else settings.generate_queue


def queue_names(settings: Settings) -> list[str]:
    return sorted({settings.generate_queue, settings.edit_queue})


def enqueue(celery: Celery, settings: Settings, job: JobRecord) -> None:
    """Send the job's task: it carries only the job id; the worker reads the rest from the job record."""
    celery.send_task(TASK_NAMES[job.kind], args=[job.id], queue=queue_of(settings, job.kind))


def live_workers(celery: Celery, timeout_s: float) -> list[str]:
    """Host names of the Celery workers that answered a ping within ``timeout_s``."""
    replies = celery.control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)
