"""API keys, per-key visibility and limits, Idempotency-Key, hostile JSON: a real API over HTTP on the machine's
Redis (db 13, flushed around each test). No worker runs: tests play its part through the job store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import ValidationError

from core.settings import Settings
from tests.redis_server import redis_url
from tests.service.helpers import Server, make_settings, png_bytes

REDIS_DB = 13
KEY_A, KEY_B = "alice-key-0123456789", "bob-key-9876543210"
BODY = {"seed": 1, "motion_seed": 2, "num_frames": 4}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(REDIS_DB), decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def serve(db: redis.Redis, tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def start(**overrides) -> Server:
        servers.append(
            Server(make_settings(tmp_path, redis_url=redis_url(REDIS_DB), **overrides)).__enter__()
        )
        return servers[-1]

    yield start
    for s in servers:
        s.__exit__()


def client(server: Server, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def test_with_keys_a_request_needs_a_valid_key(serve):
    server = serve(api_keys=f"{digest(KEY_A)}, {digest(KEY_B)}")
    for c in (
        client(server),
        client(server, "not-a-key"),
        client(server, digest(KEY_A)),
    ):  # the digest is no key
        for r in (c.post("/generate", json=BODY), c.get(f"/jobs/{'0' * 32}")):
            assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
    assert client(server, KEY_A).post("/generate", json=BODY).status_code == 202
    assert client(server).get("/healthz").status_code == 200


def test_a_key_sees_only_its_own_jobs(serve):
    server = serve(api_keys=f"{digest(KEY_A)},{digest(KEY_B)}")
    alice, bob = client(server, KEY_A), client(server, KEY_B)
    job = alice.post("/generate", json=BODY).json()
    server.finish(job["id"])

    assert alice.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
    assert bob.get(f"/jobs/{job['id']}").status_code == 404
    assert bob.post(f"/jobs/{job['id']}/cancel").status_code == 404
    assert bob.post("/generate", json={"canonical_from": job["id"]}).status_code == 404
    edit = bob.post("/edit", data={"job_id": job["id"]}, files={"image": ("a.png", png_bytes(), "image/png")})
    assert edit.status_code == 404
    assert alice.post("/generate", json={"canonical_from": job["id"]}).status_code == 202
    assert server.jobs.get(job["id"]).owner == digest(KEY_A)  # the digest is recorded, never the key


def test_a_key_past_its_active_job_limit_gets_429_with_retry_after(serve):
    server = serve(api_keys=f"{digest(KEY_A)},{digest(KEY_B)}", max_active_jobs_per_key=2)
    alice = client(server, KEY_A)
    first, second = (alice.post("/generate", json=BODY).json() for _ in range(2))
    refused = alice.post("/generate", json=BODY)
    assert refused.status_code == 429 and "limit" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    assert (
        client(server, KEY_B).post("/generate", json=BODY).status_code == 202
    )  # another key is not affected

    server.finish(first["id"])
    assert alice.post("/generate", json=BODY).status_code == 202
    assert alice.post("/generate", json=BODY).status_code == 429  # second and the new one are queued
    alice.post(f"/jobs/{second['id']}/cancel")
    assert alice.post("/generate", json=BODY).status_code == 202


def test_without_keys_every_caller_is_served():
    assert Settings(_env_file=None).api_key_hashes == frozenset()
    with pytest.raises(ValidationError, match="sha256sum"):
        Settings(api_keys=KEY_A)  # a key where its digest belongs


def test_the_same_idempotency_key_and_body_give_the_same_job(serve, db: redis.Redis):
    server = serve()
    c = client(server)
    first = c.post("/generate", json=BODY, headers={"Idempotency-Key": "k1"})
    again = c.post(
        "/generate",
        content=b'{"num_frames": 4, "motion_seed": 2,  "seed": 1}',
        headers={"Idempotency-Key": "k1", "content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert len(db.keys("gendef:job:*")) == 1

    other = c.post("/generate", json=BODY | {"seed": 9}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and "new key" in other.json()["detail"]
    assert (
        c.post("/generate", json=BODY, headers={"Idempotency-Key": "k2"}).json()["id"] != first.json()["id"]
    )
    keys = db.keys("gendef:idempotency:*")
    assert len(keys) == 2 and all(
        24 * 3600 - 60 < db.ttl(k) <= 24 * 3600 for k in keys
    )  # remembered for 24 h


def test_an_edit_retried_with_a_new_multipart_boundary_is_the_same_job(serve):
    server = serve()
    c = client(server)
    parent = c.post("/generate", json=BODY).json()
    server.finish(parent["id"])
    image = png_bytes()
    ids = {
        c.post(
            "/edit",
            data={"job_id": parent["id"]},
            files={"image": ("a.png", image, "image/png")},
            headers={"Idempotency-Key": "edit-1"},
        ).json()["id"]
        for _ in range(2)
    }  # httpx: a new boundary each
    assert len(ids) == 1


def test_a_refused_request_does_not_hold_its_idempotency_key(serve):
    c = client(serve())
    assert c.post("/generate", json={"num_frames": 0}, headers={"Idempotency-Key": "k"}).status_code == 422
    assert c.post("/generate", json=BODY, headers={"Idempotency-Key": "k"}).status_code == 202


def test_idempotency_keys_of_different_api_keys_are_separate(serve):
    server = serve(api_keys=f"{digest(KEY_A)},{digest(KEY_B)}")
    a = client(server, KEY_A).post("/generate", json=BODY, headers={"Idempotency-Key": "same"})
    b = client(server, KEY_B).post("/generate", json=BODY, headers={"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


def test_a_revoked_key_gets_401_not_its_stored_answer(serve):
    headers = {"Idempotency-Key": "once"}
    first = client(serve(api_keys=f"{digest(KEY_A)},{digest(KEY_B)}"), KEY_A).post(
        "/generate", json=BODY, headers=headers
    )
    assert first.status_code == 202
    revoked = serve(api_keys=digest(KEY_B))  # the same Redis, KEY_A taken off
    again = client(revoked, KEY_A).post("/generate", json=BODY, headers=headers)
    assert again.status_code == 401 and "idempotent-replayed" not in again.headers, again.text
    assert first.json()["id"] not in again.text
    wrong = client(revoked, "not-a-key").post("/generate", json=BODY, headers=headers)
    assert wrong.status_code == 401


@pytest.mark.parametrize("body", [b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000])
def test_deeply_nested_or_large_json_is_4xx(serve, body: bytes):
    c = client(serve())
    r = c.post("/generate", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    r = c.post(
        "/generate",
        content=body[:30_000] + body[-30_000:],
        headers={"content-type": "application/json", "Idempotency-Key": "n"},
    )
    assert 400 <= r.status_code < 500, r.text
    assert c.post("/generate", json=BODY).status_code == 202


def test_an_expired_job_is_404_with_a_message(serve, db: redis.Redis):
    server = serve(job_ttl_s=60)
    c = client(server)
    job = c.post("/generate", json=BODY).json()
    assert 0 < db.ttl(f"gendef:job:{job['id']}") <= 60
    db.delete(f"gendef:job:{job['id']}")  # what the TTL does after 60 s
    r = c.get(f"/jobs/{job['id']}")
    assert r.status_code == 404 and "expired" in r.json()["detail"] and "60 s" in r.json()["detail"]
