"""Redis killed and started again during a burst of submissions, with a job seen running at the kill: the API
answers 503 (never 500, never a hang) while it is down, the running job is run again and succeeds, and every job
accepted (202) before or after completes."""

from __future__ import annotations

import logging
import threading
import time

import httpx

from tests.reliability.conftest import TERMINAL

log = logging.getLogger(__name__)

BODY = {"seed": 1, "motion_seed": 2, "num_frames": 2, "fps": 8}
LONG = {"seed": 3, "motion_seed": 4, "num_frames": 48, "fps": 8}  # a job long enough to be caught running


def test_jobs_accepted_around_a_redis_restart_all_complete(own_redis, deploy):
    # A 10 s job limit makes the visibility timeout 30 s: a job cut off by the restart comes back quickly.
    d = deploy(redis_url=own_redis.url, job_time_limit_s=10)
    d.start_worker()
    url = d.start_api()
    answers: list[tuple[int, str | None]] = []  # (status, job id)
    errors: list[Exception] = []
    done = threading.Event()

    def submit() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set():
                try:
                    r = client.post("/generate", json=BODY)
                    answers.append((r.status_code, r.json().get("id")))
                except Exception as e:  # a hang (timeout) or a dropped connection
                    errors.append(e)
                time.sleep(0.3)

    clients = [threading.Thread(target=submit) for _ in range(2)]
    for c in clients:
        c.start()
    time.sleep(2)
    with httpx.Client(base_url=url, timeout=30) as client:
        running = client.post("/generate", json=LONG).json()["id"]
    d.wait_for_status(running, "running")
    own_redis.kill()
    time.sleep(3)
    with httpx.Client(base_url=url, timeout=30) as client:
        down = client.get(f"/jobs/{'0' * 32}")
        assert down.status_code == 503 and "Redis" in down.json()["detail"]
        assert client.get("/readyz").status_code == 503
    own_redis.start()
    assert d.jobs.get(running).status == "running"  # as it was at the kill (append-only file)
    time.sleep(3)
    done.set()
    for c in clients:
        c.join()

    assert errors == []
    assert {status for status, _ in answers} == {202, 503}, answers  # the outage was seen, nothing else
    accepted = [running] + [job_id for status, job_id in answers if status == 202]
    log.info(
        "%d submissions: %d accepted, %d answered 503",
        len(answers),
        len(accepted),
        len(answers) - len(accepted),
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 240
        pending = set(accepted)
        while pending:
            for job_id in list(pending):
                r = client.get(f"/jobs/{job_id}")
                if r.status_code == 200 and r.json()["status"] in TERMINAL:
                    assert r.json()["status"] == "succeeded", (r.json(), d.logs())
                    pending.discard(job_id)
            assert time.monotonic() < deadline, (pending, d.logs())
            time.sleep(0.5)
    assert d.jobs.get(running).attempts == 2, d.jobs.get(
        running
    )  # the attempt cut off by the kill, then one more
