"""POST /generate (and resample), GET /jobs/{id}, cancel: the contract of API.md over real HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import redis

from tests.service.helpers import Server

DOCUMENT_FIELDS = {
    "id",
    "kind",
    "status",
    "progress",
    "params",
    "parent_id",
    "created_at",
    "started_at",
    "finished_at",
    "error",
    "artifacts",
    "queue_position",
    "metrics",
    "stage",
    "result",
}


def queued_tasks(redis_db: redis.Redis, queue: str) -> list[tuple[str, list]]:
    """(task name, args) of the Celery messages waiting in a queue, oldest first."""
    out = []
    for raw in reversed(redis_db.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], args))
    return out


def test_generate_answers_202_with_location_and_queues_the_job_by_id(
    http: httpx.Client, redis_db: redis.Redis
):
    r = http.post("/generate", json={"seed": 1, "motion_seed": 2, "num_frames": 16})

    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert set(job) == DOCUMENT_FIELDS
    assert job["kind"] == "generate" and job["status"] == "queued" and job["progress"] == 0.0
    # the default model (the shipped `mnist`) and the version of its weights
    made_by = {"model": "mnist", "version": job["params"]["version"]}
    assert job["params"] == made_by | {"seed": 1, "motion_seed": 2, "num_frames": 16, "fps": 8}
    assert job["parent_id"] is None and job["error"] is None and job["artifacts"] == {}
    assert job["started_at"] is None and job["finished_at"] is None and job["created_at"].endswith("+00:00")
    assert len(job["id"]) == 32  # uuid4 hex: 122 random bits
    # The task carries only the job id; the worker reads everything else from the record.
    assert queued_tasks(redis_db, "gendef-generate") == [("gendef.generate", [job["id"]])]

    assert http.get(r.headers["location"]).json() == job


def test_missing_seeds_are_drawn_and_recorded(http: httpx.Client):
    a = http.post("/generate", json={}).json()["params"]
    b = http.post("/generate", json={}).json()["params"]

    assert set(a) == {"model", "version", "seed", "motion_seed", "num_frames", "fps"}
    assert a["num_frames"] == 16 and a["fps"] == 8
    assert all(isinstance(p[k], int) and 0 <= p[k] < 2**31 for p in (a, b) for k in ("seed", "motion_seed"))
    assert (a["seed"], a["motion_seed"]) != (b["seed"], b["motion_seed"])


def test_job_ids_are_distinct_and_unknown_ids_are_404(http: httpx.Client):
    ids = {http.post("/generate", json={"seed": 1}).json()["id"] for _ in range(5)}
    assert len(ids) == 5

    for method, path in [("GET", "/jobs/nope"), ("POST", "/jobs/nope/cancel"), ("GET", "/jobs/" + "0" * 32)]:
        r = http.request(method, path)
        assert r.status_code == 404
        assert "does not exist" in r.json()["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 129}, "num_frames"),  # past GENDEF_MAX_FRAMES (128)
        ({"num_frames": "16"}, "num_frames"),
        ({"num_frames": 16.5}, "num_frames"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"motion_seed": 2**63}, "motion_seed"),
        ({"seed": "one"}, "seed"),
        ({"motion_seed": True}, "motion_seed"),
        ({"fps": 0}, "fps"),
        ({"fps": 61}, "fps"),
        ({"frames": 16}, "frames"),  # a misspelt field is refused, not ignored
    ],
)
def test_invalid_generate_bodies_are_422_naming_the_field(
    http: httpx.Client, redis_db: redis.Redis, body, field
):
    r = http.post("/generate", json=body)

    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", field]]
    assert redis_db.llen("gendef-generate") == 0


def test_num_frames_at_the_limit_is_accepted(http: httpx.Client):
    assert http.post("/generate", json={"num_frames": 128}).status_code == 202
    assert http.post("/generate", json={"num_frames": 1}).status_code == 202


def test_a_body_that_is_not_json_is_422(http: httpx.Client):
    r = http.post("/generate", content=b"{seed: 1", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_resample_of_an_unknown_job_is_404(http: httpx.Client):
    r = http.post("/generate", json={"canonical_from": "f" * 32})
    assert r.status_code == 404
    assert r.json()["detail"] == f"canonical_from: job {'f' * 32} does not exist (or its record has expired)"


def test_resample_of_an_unfinished_job_is_409_saying_to_wait(http: httpx.Client, server: Server):
    queued = http.post("/generate", json={"seed": 1}).json()["id"]
    r = http.post("/generate", json={"canonical_from": queued})
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"canonical_from: job {queued} is queued, not succeeded: wait until it has succeeded (poll GET /jobs/{queued})"
    )

    server.jobs.mark_running(queued)
    server.jobs.mark_failed(queued, "model_error", "boom")
    r = http.post("/generate", json={"canonical_from": queued})
    assert r.status_code == 409 and "is failed" in r.json()["detail"]


def test_resample_records_the_parent_and_its_content_seed(
    http: httpx.Client, finished_job: dict, redis_db: redis.Redis
):
    r = http.post("/generate", json={"canonical_from": finished_job["id"], "motion_seed": 7, "num_frames": 8})

    assert r.status_code == 202
    job = r.json()
    assert job["kind"] == "resample" and job["parent_id"] == finished_job["id"]
    made_by = {k: finished_job["params"][k] for k in ("model", "version")}
    assert job["params"] == made_by | {"seed": 3, "motion_seed": 7, "num_frames": 8, "fps": 8}
    assert queued_tasks(redis_db, "gendef-generate")[-1] == ("gendef.resample", [job["id"]])


def test_resample_refuses_a_seed_of_its_own(http: httpx.Client, finished_job: dict):
    r = http.post("/generate", json={"canonical_from": finished_job["id"], "seed": 5})
    assert r.status_code == 422
    assert "seed cannot be combined with canonical_from" in r.json()["detail"][0]["msg"]


def test_cancel_of_a_queued_job_is_immediate_and_final(http: httpx.Client, server: Server):
    job_id = http.post("/generate", json={"seed": 1}).json()["id"]

    r = http.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "canceled" and r.json()["finished_at"] is not None
    # A worker that picks the task up later finds it canceled and leaves it so.
    assert server.jobs.mark_running(job_id).status == "canceled"
    assert http.get(f"/jobs/{job_id}").json()["status"] == "canceled"


def test_cancel_of_a_running_job_asks_the_worker_to_stop(http: httpx.Client, server: Server):
    job_id = http.post("/generate", json={"seed": 1}).json()["id"]
    server.jobs.mark_running(job_id)

    assert http.post(f"/jobs/{job_id}/cancel").json()["status"] == "running"
    assert server.jobs.cancel_requested(job_id)
    server.jobs.mark_canceled(job_id)  # what the worker does at its next step
    assert http.get(f"/jobs/{job_id}").json()["status"] == "canceled"


def test_cancel_of_a_finished_job_returns_it_unchanged(http: httpx.Client, finished_job: dict):
    r = http.post(f"/jobs/{finished_job['id']}/cancel")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "succeeded"
    assert doc["artifacts"].keys() == finished_job["artifacts"].keys()


def test_progress_and_failure_show_in_the_document(http: httpx.Client, server: Server):
    job_id = http.post("/generate", json={"seed": 1}).json()["id"]
    server.jobs.mark_running(job_id)
    server.jobs.set_progress(job_id, 0.25, "sampling")
    doc = http.get(f"/jobs/{job_id}").json()
    assert doc["status"] == "running" and doc["progress"] == 0.25 and doc["started_at"] is not None

    server.jobs.mark_failed(job_id, "out_of_memory", "The GPU ran out of memory; ask for fewer frames.")
    doc = http.get(f"/jobs/{job_id}").json()
    assert doc["status"] == "failed" and doc["artifacts"] == {}
    assert doc["error"] == {
        "code": "out_of_memory",
        "message": "The GPU ran out of memory; ask for fewer frames.",
    }


def test_openapi_describes_the_contract(http: httpx.Client):
    spec = http.get("/openapi.json").json()
    assert {
        "/generate",
        "/edit",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/healthz",
        "/readyz",
        "/metrics",
        "/models",
    } <= set(spec["paths"])
    assert list(spec["paths"]["/edit"]["post"]["requestBody"]["content"]) == ["multipart/form-data"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["GenerateRequest"]["properties"]) == {
        "seed",
        "motion_seed",
        "num_frames",
        "fps",
        "labels",
        "canonical_from",
        "model",
        "webhook",
        "webhook_events",
    }
    assert set(schemas["JobDocument"]["properties"]) == DOCUMENT_FIELDS


def test_the_largest_seed_is_accepted(http: httpx.Client):
    r = http.post("/generate", json={"seed": 2**32 - 1, "motion_seed": 0})
    assert r.status_code == 202 and r.json()["params"]["seed"] == 2**32 - 1
