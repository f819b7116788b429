"""The gendef.webhook task: sign and POST one job event to its webhook, retried with exponential backoff.

It runs on its own queue (GENDEF_WEBHOOK_QUEUE) so the job's own task never waits for a receiver; the document is
the job as it was at the event (artifact URLs signed when the delivery is made). See core/webhooks.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import httpx
from celery import Task

from core import webhooks
from core.documents import JobDocument
from core.queues import WEBHOOK_TASK
from core.settings import Settings
from worker import runtime
from worker.celery_app import app

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(settings: Settings, url: str, event: str, job_id: str, data: bytes) -> None:
    """One delivery attempt; raises DeliveryFailed unless the receiver answered 2xx."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "gendef-serve-webhook",
        "X-Gendef-Event": event,
        "X-Gendef-Delivery": f"{job_id}.{event}",
        "X-Gendef-Signature": signature(settings.webhook_secret.get_secret_value(), data),
    }
    try:
        response = httpx.post(url, content=data, headers=headers, timeout=settings.webhook_timeout_s)
    except httpx.HTTPError as e:
        raise DeliveryFailed(f"{type(e).__name__}: {e}") from e
    if not response.is_success:
        raise DeliveryFailed(f"the receiver answered {response.status_code}")


@app.task(name=WEBHOOK_TASK, bind=True)
def deliver(self: Task, event: str, record: dict[str, Any]) -> None:
    rt = runtime.get()
    settings = rt.settings
    job = webhooks.record_from_json(record)
    document = JobDocument.from_record(job, lambda key: rt.blobs.presign(key, settings.url_ttl_s))
    attempt = self.request.retries + 1
    try:
        body = json.dumps({"event": event, "job": document.model_dump()}).encode()
        post(settings, job.webhook["url"], event, job.id, body)
    except DeliveryFailed as e:
        if attempt >= settings.webhook_attempts:
            log.error(
                "webhook %s of job %s: attempt %d of %d failed (%s); giving up",
                event,
                job.id,
                attempt,
                settings.webhook_attempts,
                e,
            )
            return
        delay = settings.webhook_backoff_s * 2 ** (attempt - 1)
        log.warning(
            "webhook %s of job %s: attempt %d failed (%s); retrying in %.1f s",
            event,
            job.id,
            attempt,
            e,
            delay,
        )
        raise self.retry(countdown=delay, max_retries=None) from e
    log.info("webhook %s of job %s delivered (attempt %d)", event, job.id, attempt)
