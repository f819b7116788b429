"""The sweep of jobs whose task was never sent: the API records a job (marked unsent), sends its task, then clears
the mark; if it died or lost Redis between the two, the record would stay queued for good (counted against its
key's limit, ahead of others in the queue). Each worker's main process fails such records `queue_unavailable`
once they are GENDEF_SEND_TIMEOUT_S old (core.jobs.JobStore.fail_unsent); the client was never answered 202 for
them (a 503, or no answer)."""

from __future__ import annotations

import logging
import threading

import redis

from core.settings import Settings
from worker.runtime import job_store

log = logging.getLogger(__name__)

MAX_PERIOD_S = 10.0  # sweep at least this often (and twice per GENDEF_SEND_TIMEOUT_S)


def sweep_forever(settings: Settings, stop: threading.Event) -> None:
    jobs = job_store(settings)
    while not stop.wait(min(MAX_PERIOD_S, settings.send_timeout_s / 2)):
        try:
            failed = jobs.fail_unsent(settings.send_timeout_s)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.warning("sweep of unsent jobs: Redis unreachable (%s); trying again later", e)
            continue
        for job_id in failed:
            log.warning("job %s was recorded but its task never sent: failed queue_unavailable", job_id)


def start(settings: Settings) -> threading.Event:
    """Start the sweep in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=sweep_forever, args=(settings, stop), name="unsent-sweep", daemon=True).start()
    return stop
