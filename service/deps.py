"""What the routes depend on: one Services object built by create_app, and the caller's job, through Depends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import urljoin

import redis
from celery import Celery
from fastapi import Depends, Request

from core.errors import NotFound
from core.jobs import JobRecord, JobStore, OwnedJobStore, connect_redis
from core.models import ModelRegistry
from core.queues import make_celery
from core.settings import Settings
from core.storage import LocalStore, S3Store, make_store
from core.webhooks import Notifier
from service.auth import authenticate


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    blobs: LocalStore | S3Store
    celery: Celery
    models: ModelRegistry

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
            models=ModelRegistry(settings, cache_s=settings.models_list_cache_s),
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


def caller_job(job_id: str, svc: ServicesDep) -> JobRecord:
    """The job ``job_id`` as the caller sees it (with API keys: only its own), or NotFound."""
    job = svc.jobs.get(job_id)
    if job is None:
        raise NotFound(
            f"job {job_id} does not exist (or its record has expired: records are kept "
            f"{svc.settings.job_ttl_s} s after their last change)"
        )
    return job


JobDep = Annotated[JobRecord, Depends(caller_job)]
