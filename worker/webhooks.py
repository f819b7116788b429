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
    """One delivery attempt; raises Refused for a host that resolves to an address deliveries may not reach
    (core/webhooks.py), DeliveryFailed unless the receiver answered 2xx."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "gendef-serve-webhook",
        "X-Gendef-Event": event,
        "X-Gendef-Delivery": f"{job_id}.{event}",
        "X-Gendef-Signature": signature(settings.webhook_secret.get_secret_value(), data),
    }
    target = httpx.URL(url)
    headers["Host"] = target.netloc.decode("ascii")
    try:
        address = webhooks.resolve(
            settings, target.host, target.port or {"https": 443}.get(target.scheme, 80)
        )
        # The checked address itself, with the name as Host and TLS SNI (and certificate check): a second
        # lookup could answer another address. No proxy from the environment, no redirects followed.
        with httpx.Client(trust_env=False, timeout=settings.webhook_timeout_s) as client:
            response = client.post(
                target.copy_with(host=address),
                content=data,
                headers=headers,
                extensions={"sni_hostname": target.host},
            )
    except (httpx.HTTPError, OSError) as e:  # OSError: the name does not resolve (now)
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
    except webhooks.Refused as e:  # the same answer on every try: not retried
        log.error("webhook %s of job %s refused: %s (GENDEF_WEBHOOK_ALLOW)", event, job.id, e)
        return
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
