"""GET /jobs/{id}/events through the production-mode deployment: a real worker moves the job, a client follows it."""

from __future__ import annotations

import httpx

from tests.e2e.test_jobs import submit
from tests.sse import HEARTBEAT, events

STATUS_ORDER = ["queued", "running", "succeeded"]


def test_a_client_follows_a_job_from_queued_to_a_final_event(http: httpx.Client):
    job = submit(http, "/generate", json={"seed": 5, "motion_seed": 6, "num_frames": 8})
    with http.stream("GET", f"/jobs/{job['id']}/events", timeout=120) as response:
        assert response.status_code == 200
        received = [item for item in events(response) if item != HEARTBEAT]  # ends when the server closes it

    names = [name for name, _ in received]
    assert names == ["update"] * (len(received) - 1) + ["final"], names
    docs = [doc for _, doc in received]
    assert all(doc["id"] == job["id"] for doc in docs)
    steps = [(STATUS_ORDER.index(doc["status"]), doc["progress"]) for doc in docs]
    assert steps == sorted(steps), f"status or progress went back: {steps}"
    states = [(doc["status"], doc["progress"], doc["stage"]) for doc in docs]
    assert all(states[i] != states[i + 1] for i in range(len(states) - 1)), (
        f"an unchanged state repeated: {states}"
    )
    final = docs[-1]
    assert final["status"] == "succeeded" and final["progress"] == 1.0
    assert set(final["artifacts"]) == {"video", "canonical", "deformation"}
    assert final["metrics"]["run_time"] > 0 and list(final["metrics"]["stage_times"])[-3:] == [
        "sampling",
        "encoding",
        "uploading",
    ]
    # The video named by the final event is there to fetch.
    video = httpx.get(final["artifacts"]["video"]["url"], timeout=30)
    assert video.status_code == 200 and len(video.content) == final["artifacts"]["video"]["bytes"]
