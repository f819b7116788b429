"""What the routes depend on: one Services object built by create_app, handed out through Depends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import urljoin

import redis
from celery import Celery
from fastapi import Depends, Request

from service.auth import OwnedJobStore, authenticate
from service.jobs import JobStore, connect_redis
from service.queue import make_celery
from service.settings import Settings
from service.storage import LocalStore, S3Store, make_store
from service.webhooks import Notifier


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    blobs: LocalStore | S3Store
    celery: Celery

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        client = connect_redis(settings)
        celery = make_celery(settings)
        return cls(
            settings=settings,
            redis=client,
            jobs=JobStore(client, ttl_s=settings.job_ttl_s, on_change=Notifier(celery, settings)),
            blobs=make_store(settings),
            celery=celery,
        )

    def presigner(self, request: Request) -> Callable[[str], str]:
        """key -> absolute URL: S3 URLs are absolute already, the local store's are joined to this API's."""
        base = str(request.base_url)
        return lambda key: urljoin(base, self.blobs.presign(key, self.settings.url_ttl_s))


def get_services(request: Request) -> Services:
    """The services as the caller may use them: with API keys set, a valid key (401 otherwise) and its jobs only."""
    svc: Services = request.app.state.services
    digests = svc.settings.api_key_hashes
    if not digests:
        return svc
    owner = authenticate(request, digests)
    return replace(svc, jobs=OwnedJobStore(svc.jobs, owner, svc.settings.max_active_jobs_per_key))


def get_any_services(request: Request) -> Services:
    """The services without a key check: for routes that carry their own proof (signed file URLs)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
AnyServicesDep = Annotated[Services, Depends(get_any_services)]
