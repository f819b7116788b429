"""Webhooks: a job's `webhook` URL is POSTed the job document when the job starts and/or completes.

Request: ``POST <webhook>`` with a JSON body ``{"event": "start" | "completed", "job": <job document>}`` and the
headers ``X-Gendef-Event`` (the event), ``X-Gendef-Delivery`` (``<job id>.<event>``, the same on every retry: use it
to drop duplicates) and ``X-Gendef-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes keyed with
GENDEF_WEBHOOK_SECRET. Any 2xx answer ends the delivery; anything else (or no answer within
GENDEF_WEBHOOK_TIMEOUT_S) is retried, GENDEF_WEBHOOK_ATTEMPTS tries in all, waiting GENDEF_WEBHOOK_BACKOFF_S, then
twice as long each time. ``start`` is sent when the job turns running, ``completed`` when it ends (succeeded,
failed or canceled: the job document says which).

Receivers must be public: a delivery resolves the URL's host once, refuses it if any address it resolves to is
loopback, private, link-local, multicast, reserved or otherwise not global (``refusal``), and connects to that
checked address (Host header and TLS SNI of the name), so a name that resolves again to another address (DNS
rebinding) is never reached. GENDEF_WEBHOOK_ALLOW names internal receivers (CIDRs, host names) that are allowed.
The API refuses a URL whose host is such an address written out (or ``localhost``) at once (422).

The job store calls a Notifier after each status change (in the API for a cancel, in the worker otherwise); it
only queues a Celery task (gendef.webhook, on GENDEF_WEBHOOK_QUEUE), so a slow or dead receiver never holds up a
job. The worker's task (worker/webhooks.py) signs and sends it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import urlsplit

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
    host = urlsplit(url).hostname or ""
    refused = _literal_refusal(settings, host)
    if refused:
        raise Invalid(
            f"webhook: {refused}; webhooks go to public addresses only (an operator may allow internal "
            "receivers with GENDEF_WEBHOOK_ALLOW)",
            (where, "webhook"),
            url,
        )
    return {"url": url, "events": sorted(set(events or DEFAULT_EVENTS), key=EVENTS.index)}


class Refused(ValueError):
    """A webhook host that resolves to an address deliveries may not reach."""


def _allowed(settings: Settings) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], set[str]]:
    """GENDEF_WEBHOOK_ALLOW as (networks, host names)."""
    networks, names = [], set()
    for entry in (e.strip().lower() for e in settings.webhook_allow.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return networks, names


def refusal(settings: Settings, address: str) -> str | None:
    """Why a webhook may not be delivered to this IP address (None: it may): the class it belongs to."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone index is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in _allowed(settings)[0]):
        return None
    for name, member in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not public", not ip.is_global),
    ):
        if member:
            return f"{ip} is a {name} address"
    return None


def _literal_refusal(settings: Settings, host: str) -> str | None:
    """The refusal of a host written as an IP address, or of localhost; None for other names (checked when
    the delivery resolves them)."""
    if host.rstrip(".").lower() in _allowed(settings)[1]:
        return None
    if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
        return f"{host} is a loopback address"
    try:
        return refusal(settings, host)
    except ValueError:  # a name
        return None


def resolve(settings: Settings, host: str, port: int) -> str:
    """The address a delivery to ``host`` connects to, resolved once here: Refused when any address the name
    resolves to may not be reached; socket.gaierror when it does not resolve (now)."""
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    if host.rstrip(".").lower() not in _allowed(settings)[1]:
        for address in addresses:
            why = refusal(settings, address)
            if why:
                raise Refused(f"{host} resolves to {why}")
    return addresses[0]


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
