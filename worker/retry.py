"""The worker's view of the blob store: a store it cannot reach is tried again with exponential backoff.

A job waits out a short outage of S3 (a restart, a network blip) instead of failing at once; after
``attempts`` tries (waiting ``backoff_s``, 2x, 4x ... between them) the last StorageUnavailable ends the job as
`storage_unavailable`. A missing object (BlobNotFound) is an answer, not an outage: it is never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from core.storage import StorageUnavailable, Store

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingStore:
    def __init__(self, store: Store, attempts: int, backoff_s: float):
        self.store = store
        self.attempts = attempts
        self.backoff_s = backoff_s

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        attempt, waited = 1, 0.0
        while True:
            try:
                return call()
            except StorageUnavailable as e:
                if attempt >= self.attempts:
                    raise StorageUnavailable(f"{e}; tried {attempt} times over {waited:.0f} s") from e
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "store unavailable while %s (%s): try %d of %d in %.1f s",
                    what,
                    e,
                    attempt + 1,
                    self.attempts,
                    delay,
                )
                time.sleep(delay)
                waited += delay
                attempt += 1

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._retry(f"writing {key}", lambda: self.store.put(key, data, content_type))

    def get(self, key: str) -> bytes:
        return self._retry(f"reading {key}", lambda: self.store.get(key))

    def delete(self, key: str) -> None:
        self._retry(f"deleting {key}", lambda: self.store.delete(key))

    def presign(self, key: str, expires_s: int) -> str:
        return self.store.presign(key, expires_s)

    def ping(self) -> None:
        self.store.ping()
