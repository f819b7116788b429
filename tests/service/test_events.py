"""GET /jobs/{id}/events, queue_position and metrics against a real API and Redis, with the test playing the
worker through the JobStore: each status change is made only after the stream has shown the previous one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from tests.service.helpers import Server, make_settings
from tests.sse import HEARTBEAT, events, next_event


@pytest.fixture
def server(redis_db: redis.Redis, tmp_path: Path) -> Iterator[Server]:
    with Server(make_settings(tmp_path, events_poll_s=0.05, events_heartbeat_s=0.3)) as s:
        yield s


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_queue_position_counts_the_jobs_ahead_in_the_same_queue(http: httpx.Client, server: Server):
    first, second, third = (http.post("/generate", json={"seed": s}).json() for s in (1, 2, 3))
    assert [job["queue_position"] for job in (first, second, third)] == [0, 1, 2]  # the 202 answers

    source = server.finish(http.post("/generate", json={"seed": 4}).json()["id"])
    edit = http.post(
        "/edit",
        data={"job_id": source.id},
        files={"image": ("e.png", server.blobs.get(source.artifacts["canonical"].key))},
    ).json()
    assert edit["queue_position"] == 0  # the edit queue is empty: generate jobs are not ahead of it

    http.post(f"/jobs/{first['id']}/cancel")
    assert [http.get(f"/jobs/{j['id']}").json()["queue_position"] for j in (first, second, third)] == [
        None,
        0,
        1,
    ]
    server.jobs.mark_running(second["id"])
    assert [http.get(f"/jobs/{j['id']}").json()["queue_position"] for j in (second, third)] == [None, 0]


def test_metrics_time_the_queue_the_run_and_each_finished_stage(http: httpx.Client, server: Server):
    job_id = http.post("/generate", json={"seed": 1}).json()["id"]
    doc = http.get(f"/jobs/{job_id}").json()
    assert doc["metrics"] == {"queue_time": None, "run_time": None, "stage_times": {}}

    server.jobs.mark_running(job_id)
    server.jobs.set_progress(job_id, 0.0, "sampling")
    server.jobs.set_progress(job_id, 0.5, "encoding")
    doc = http.get(f"/jobs/{job_id}").json()
    assert doc["metrics"]["queue_time"] == pytest.approx(
        seconds(doc["created_at"], doc["started_at"]), abs=1e-3
    )
    assert doc["metrics"]["run_time"] is None and list(doc["metrics"]["stage_times"]) == ["sampling"]

    server.jobs.set_progress(job_id, 0.9, "encoding")  # progress within a stage: not a new stage
    server.jobs.mark_succeeded(job_id, {})
    doc = http.get(f"/jobs/{job_id}").json()
    metrics = doc["metrics"]
    assert metrics["run_time"] == pytest.approx(seconds(doc["started_at"], doc["finished_at"]), abs=1e-3)
    assert list(metrics["stage_times"]) == ["sampling", "encoding"]
    assert all(t >= 0 for t in metrics["stage_times"].values())
    assert sum(metrics["stage_times"].values()) <= metrics["run_time"] + 2e-3  # stages begin after the start


def test_events_follow_a_job_in_order_with_heartbeats_and_end_with_a_final_event(
    http: httpx.Client, server: Server
):
    ahead = http.post("/generate", json={"seed": 1}).json()
    job_id = http.post("/generate", json={"seed": 2}).json()["id"]
    with http.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        name, doc = next(stream)  # the current state at once
        assert (name, doc["status"], doc["queue_position"]) == ("update", "queued", 1)
        assert next(stream) == HEARTBEAT  # nothing changed for a while
        http.post(f"/jobs/{ahead['id']}/cancel")
        name, doc = next_event(stream)
        assert (name, doc["status"], doc["queue_position"]) == ("update", "queued", 0)
        server.jobs.mark_running(job_id)
        name, doc = next_event(stream)
        assert (name, doc["status"], doc["queue_position"], doc["progress"]) == (
            "update",
            "running",
            None,
            0.0,
        )
        server.jobs.set_progress(job_id, 1 / 3, "encoding")
        name, doc = next_event(stream)
        assert (name, doc["status"], doc["progress"]) == ("update", "running", pytest.approx(1 / 3))
        server.finish(job_id)
        name, doc = next_event(stream)
        assert (name, doc["status"], doc["progress"]) == ("final", "succeeded", 1.0)
        assert set(doc["artifacts"]) == {"video", "canonical", "deformation"}
        assert list(stream) == []  # the server closed the stream


def test_events_of_a_finished_job_are_its_final_document(http: httpx.Client, finished_job: dict):
    with http.stream("GET", f"/jobs/{finished_job['id']}/events") as response:
        assert [(name, doc["status"]) for name, doc in events(response)] == [("final", "succeeded")]


def test_events_of_an_unknown_job_are_404(http: httpx.Client):
    response = http.get("/jobs/0123456789abcdef/events")
    assert response.status_code == 404 and "does not exist" in response.json()["detail"]


def test_a_record_that_expires_mid_stream_ends_it_with_an_error_event(
    http: httpx.Client, redis_db: redis.Redis
):
    job_id = http.post("/generate", json={"seed": 1}).json()["id"]
    with http.stream("GET", f"/jobs/{job_id}/events") as response:
        stream = events(response)
        assert next(stream)[0] == "update"
        redis_db.delete(f"gendef:job:{job_id}")
        name, data = next_event(stream)
        assert name == "error" and "expired" in data["detail"]
        assert list(stream) == []
