"""Celery queues and task names, shared by the API (which sends tasks by name, importing no worker code) and the
workers (which register their tasks under these names).

``JOB_TASKS`` is the one table of job kinds: each kind's task name and the queue (role) it goes to. The worker's
own table (worker/tasks.py) gives each kind its work function and stages, and checks it covers these kinds.
"""

from __future__ import annotations

from typing import Literal

from celery import Celery

from core.jobs import KINDS, JobRecord
from core.settings import Settings

# kind -> (Celery task name, queue): "generate" = GENDEF_GENERATE_QUEUE (the generator, or an optimisation:
# heavy), "edit" = GENDEF_EDIT_QUEUE (only reads a job's fields: may be served by other, CPU, workers).
JOB_TASKS: dict[str, tuple[str, Literal["generate", "edit"]]] = {
    "generate": ("gendef.generate", "generate"),
    "resample": ("gendef.resample", "generate"),
    "edit": ("gendef.edit", "edit"),
    "track": ("gendef.track", "edit"),
    "segment": ("gendef.segment", "edit"),
    "decompose": ("gendef.decompose", "generate"),
    "render": ("gendef.render", "generate"),  # may sample the motion of a generated video at new times
}
assert tuple(JOB_TASKS) == KINDS
WEBHOOK_TASK = "gendef.webhook"  # on GENDEF_WEBHOOK_QUEUE: one delivery of a job event (core/webhooks.py)


def make_celery(settings: Settings) -> Celery:
    """A Celery client that sends tasks by name (no task of its own)."""
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


def model_queue(settings: Settings, model: str) -> str:
    """The generate queue of a model named in GENDEF_MODEL_QUEUES."""
    return f"{settings.generate_queue}-{model}"


def queue_of(settings: Settings, kind: str, model: str | None = None) -> str:
    """The queue of a job of ``kind`` for ``model``: a model with a queue of its own (GENDEF_MODEL_QUEUES) has its
    generate, resample and render jobs there; decompose runs no model."""
    if JOB_TASKS[kind][1] == "edit":
        return settings.edit_queue
    if kind != "decompose" and model in settings.model_queue_names:
        return model_queue(settings, model)
    return settings.generate_queue


def queue_names(settings: Settings) -> list[str]:
    """Every queue the API sends jobs to."""
    own = {model_queue(settings, m) for m in settings.model_queue_names}
    return sorted({settings.generate_queue, settings.edit_queue} | own)


def enqueue(celery: Celery, settings: Settings, job: JobRecord) -> None:
    """Send the job's task: it carries only the job id; the worker reads the rest from the job record."""
    queue = queue_of(settings, job.kind, job.params.get("model"))
    celery.send_task(JOB_TASKS[job.kind][0], args=[job.id], queue=queue)


def live_workers(celery: Celery, timeout_s: float) -> list[str]:
    """Host names of the Celery workers that answered a ping within ``timeout_s``."""
    replies = celery.control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)
