"""Webhooks: a job's `webhook` URL is POSTed the job document when the job starts and/or completes.

Request: ``POST <webhook>`` with a JSON body ``{"event": "start" | "completed", "job": <job document>}`` and the
headers ``X-Gendef-Event`` (the event), ``X-Gendef-Delivery`` (``<job id>.<event>``, the same on every retry: use it
to drop duplicates) and ``X-Gendef-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes keyed with
GENDEF_WEBHOOK_SECRET. Any 2xx answer ends the delivery; anything else (or no answer within
GENDEF_WEBHOOK_TIMEOUT_S) is retried, GENDEF_WEBHOOK_ATTEMPTS tries in all, waiting GENDEF_WEBHOOK_BACKOFF_S, then
twice as long each time. ``start`` is sent when the job turns running, ``completed`` when it ends (succeeded,
failed or canceled: the job document says which).

The job store calls a Notifier after each status change (in the API for a cancel, in the worker otherwise); it
only queues a Celery task (gendef.webhook, on GENDEF_WEBHOOK_QUEUE), so a slow or dead receiver never holds up a
job. The worker's task (worker/webhooks.py) signs and sends it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import Any

from celery import Celery

from core.errors import Invalid
from core.jobs import FINAL, Artifact, JobRecord
from core.queues import WEBHOOK_TASK
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS = ("start", "completed")
DEFAULT_EVENTS = ["completed"]


def spec(settings: Settings, url: str | None, events: list[str] | None, where: str) -> dict[str, Any] | None:
    """The job record's ``webhook`` entry for a request's (already validated) fields, or Invalid that says why
    not. ``where`` is "body" (JSON) or "form" (multipart), for the error's field."""
    if url is None:
        if events is not None:
            raise Invalid(
                "webhook_events needs a webhook URL: add webhook", (where, "webhook_events"), events
            )
        return None
    if not settings.webhook_secret.get_secret_value():
        raise Invalid(
            "this deployment cannot sign webhooks (GENDEF_WEBHOOK_SECRET is not set): leave webhook out and follow "
            "GET /jobs/{id}/events instead",
            (where, "webhook"),
            url,
        )
    return {"url": url, "events": sorted(set(events or DEFAULT_EVENTS), key=EVENTS.index)}


def event_of(before: JobRecord, after: JobRecord) -> str | None:
    if after.status == "running" and before.status != "running":
        return "start"
    if after.status in FINAL and before.status not in FINAL:
        return "completed"
    return None


class Notifier:
    """The JobStore's on_change hook: queue a delivery task when a status change is one the job asked for."""

    def __init__(self, celery: Celery, settings: Settings):
        self.celery = celery
        self.queue = settings.webhook_queue

    def __call__(self, before: JobRecord, after: JobRecord) -> None:
        event = event_of(before, after)
        if event is None or not after.webhook or event not in after.webhook["events"]:
            return
        try:
            self.celery.send_task(WEBHOOK_TASK, args=[event, asdict(after)], queue=self.queue)
        except Exception:  # the status change is committed; only its notification could not be queued
            log.exception("could not queue the %s webhook of job %s", event, after.id)


def record_from_json(data: dict[str, Any]) -> JobRecord:
    """The record a Notifier sent (``asdict``) back as a JobRecord."""
    job = JobRecord(**data)
    return replace(job, artifacts={name: Artifact(**a) for name, a in job.artifacts.items()})
