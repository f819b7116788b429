"""Optional API keys (GENDEF_API_KEYS): who is calling, and the jobs that caller may see.

The setting holds SHA-256 hex digests of the keys, never the keys. With keys set, a request needs
``Authorization: Bearer <key>`` (401 otherwise); each job records the digest of the key that submitted it, and
another key's job does not exist for a caller (404). A key may have GENDEF_MAX_ACTIVE_JOBS_PER_KEY jobs queued
or running at once; past that a submission is refused with 429 and Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import HTTPException, Request

from service.jobs import FINAL, JobRecord, JobStore, new_job_id

RETRY_AFTER_S = 10  # a tiny job takes seconds, a long one minutes: come back after this and see
ACTIVE_PREFIX = (
    "gendef:active:"  # + owner: set of the owner's job ids that were queued or running when last seen
)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(request: Request, digests: Iterable[str]) -> str:
    """The digest of the request's valid bearer key; 401 without one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    digest = key_digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else ""
    if not digest or not any(hmac.compare_digest(digest, d) for d in digests):
        raise HTTPException(
            401,
            "a valid API key is required: send the header `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return digest


class OwnedJobStore(JobStore):
    """The job store as one key sees it: other keys' jobs are absent; new jobs carry the key and count against
    its limit of active (queued or running) jobs."""

    def __init__(self, base: JobStore, owner: str, max_active: int):
        super().__init__(base.redis, base.ttl_s, on_change=base.on_change)
        self.owner = owner
        self.max_active = max_active

    def get(self, job_id: str) -> JobRecord | None:
        job = super().get(job_id)
        return job if job is not None and job.owner == self.owner else None

    def _update(self, job_id: str, change: Callable[[JobRecord], dict[str, Any] | None]) -> JobRecord | None:
        if self.get(job_id) is None:  # the owner of a record never changes
            return None
        return super()._update(job_id, change)

    def create(self, kind: str, params: dict[str, Any], **kwargs: Any) -> JobRecord:
        job_id = kwargs.pop("job_id", None) or new_job_id()
        self._reserve(job_id)
        return super().create(kind, params, job_id=job_id, owner=self.owner, **kwargs)

    def _reserve(self, job_id: str) -> None:
        """Add the job to the key's active set, atomically with counting it: 429 when the set is full. Jobs that
        have finished (or whose record is gone) leave the set here."""
        key = ACTIVE_PREFIX + self.owner

        def transaction(pipe: Any) -> None:
            members = sorted(pipe.smembers(key))
            statuses = [super(OwnedJobStore, self).get(m) for m in members]
            done = [m for m, job in zip(members, statuses, strict=True) if job is None or job.status in FINAL]
            active = len(members) - len(done)
            if active >= self.max_active:
                raise HTTPException(
                    429,
                    f"this API key has {active} jobs queued or running, its limit: wait until one finishes "
                    "(or cancel one) and submit again",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            pipe.multi()
            if done:
                pipe.srem(key, *done)
            pipe.sadd(key, job_id)
            pipe.expire(key, self.ttl_s)

        self.redis.transaction(transaction, key)
