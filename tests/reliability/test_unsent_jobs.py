"""A job whose record is written but whose task is never sent: the API process killed between the two steps, and
Redis killed at that moment. The client gets no answer or a 503, and the workers' sweep fails the record
`queue_unavailable` after GENDEF_SEND_TIMEOUT_S: it leaves its queue and its key's active-job limit, and the next
submission of that key (limit 1) is accepted and succeeds."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import httpx
import pytest

from core.jobs import UNSENT_KEY
from tests.e2e.conftest import free_port, spawn, wait_for
from tests.reliability.conftest import Deployment

KEY = "unsent-test-key-0123456789"
BODY = {"seed": 1, "motion_seed": 2, "num_frames": 2, "fps": 8}
HEADERS = {"Authorization": f"Bearer {KEY}"}
SEND_TIMEOUT_S = 2


def faulty_api(d: Deployment, fault: str) -> str:
    port = free_port()
    log = d.folder / f"faulty-api-{port}.log"
    process = spawn(
        [sys.executable, str(Path(__file__).with_name("faulty_api.py")), str(port), fault], log, d.env
    )
    d.processes.append(process)
    wait_for(f"http://127.0.0.1:{port}/healthz", {log: process})
    return f"http://127.0.0.1:{port}"


def the_orphan(d: Deployment, before: set[str]) -> str:
    (job_id,) = {key.removeprefix("gendef:job:") for key in d.jobs.redis.keys("gendef:job:*")} - before
    return job_id


def swept(d: Deployment, job_id: str) -> None:
    job = d.wait(job_id, timeout_s=10 * SEND_TIMEOUT_S + 30)
    assert job.status == "failed" and job.error["code"] == "queue_unavailable", (job, d.logs())
    assert job.attempts == 0 and "submit it again" in job.error["message"]
    assert d.jobs.redis.zscore(UNSENT_KEY, job_id) is None
    assert d.jobs.redis.zscore(f"gendef:queued:{d.settings.generate_queue}", job_id) is None


def accepted_and_succeeds(d: Deployment, api: str) -> None:
    r = httpx.post(f"{api}/generate", json=BODY, headers=HEADERS, timeout=30)
    assert r.status_code == 202, r.text  # the orphan no longer holds the key's one slot
    assert d.wait(r.json()["id"]).status == "succeeded"


def test_records_left_unsent_by_a_dead_api_or_a_dead_redis_are_failed_and_free_their_key(own_redis, deploy):
    d = deploy(
        redis_url=own_redis.url,
        send_timeout_s=SEND_TIMEOUT_S,
        api_keys=hashlib.sha256(KEY.encode()).hexdigest(),
        max_active_jobs_per_key=1,
    )
    d.start_worker()
    api = d.start_api()

    # 1. The API process dies between writing the record and sending the task: no answer.
    before = set(d.jobs.redis.keys("gendef:job:*"))
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{faulty_api(d, 'die')}/generate", json=BODY, headers=HEADERS, timeout=30)
    orphan = the_orphan(d, {k.removeprefix("gendef:job:") for k in before})
    swept(d, orphan)
    accepted_and_succeeds(d, api)

    # 2. Redis dies at that moment: the send fails, the API answers 503 and cannot mark the record either.
    before = {k.removeprefix("gendef:job:") for k in d.jobs.redis.keys("gendef:job:*")}
    r = httpx.post(
        f"{faulty_api(d, str(own_redis.process.pid))}/generate", json=BODY, headers=HEADERS, timeout=60
    )
    assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
    own_redis.process.wait()
    own_redis.start()  # the append-only file brings the record back, still queued
    orphan = the_orphan(d, before)
    swept(d, orphan)
    accepted_and_succeeds(d, api)
