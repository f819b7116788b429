"""Optional API keys (GENDEF_API_KEYS): who is calling.

The setting holds SHA-256 hex digests of the keys, never the keys. With keys set, a request needs
``Authorization: Bearer <key>`` (401 otherwise); each job records the digest of the key that submitted it, and
another key's job does not exist for a caller (404): core.jobs.OwnedJobStore, which also refuses a key past
GENDEF_MAX_ACTIVE_JOBS_PER_KEY queued or running jobs (429 with Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastapi import Request

from core.errors import Unauthorized


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_owner(authorization: str, digests: Iterable[str]) -> str | None:
    """The digest of a valid bearer key in an Authorization header's value; None when it holds none."""
    scheme, _, key = authorization.partition(" ")
    digest = key_digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else ""
    if not digest or not any(hmac.compare_digest(digest, d) for d in digests):
        return None
    return digest


def authenticate(request: Request, digests: Iterable[str]) -> str:
    """The digest of the request's valid bearer key; Unauthorized without one."""
    digest = key_owner(request.headers.get("authorization", ""), digests)
    if digest is None:
        raise Unauthorized("a valid API key is required: send the header `Authorization: Bearer <key>`")
    return digest
