"""LocalStore and S3Store (against moto's S3 server over HTTP), and the API presigning with the public endpoint."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from core.storage import (
    BlobNotFound,
    ExpiredSignature,
    InvalidSignature,
    LocalStore,
    S3Store,
    StorageUnavailable,
    artifact_key,
    input_key,
)
from tests.service.helpers import S3_CREDENTIALS, Server, make_settings


def test_keys_derive_from_job_ids():
    assert artifact_key("abc", "video.mp4") == "jobs/abc/video.mp4"
    assert input_key("abc", "image.png") == "jobs/abc/input/image.png"


@pytest.mark.parametrize(
    "key",
    ["../x", "jobs/../../x", "/etc/passwd", "jobs//x", "jobs/.hidden", "", "a\\b", "jobs/x/", "jobs/\0"],
)
def test_local_store_refuses_keys_outside_its_folder(tmp_path: Path, key: str):
    store = LocalStore(tmp_path / "root", b"secret")
    with pytest.raises(ValueError):
        store.put(key, b"x", "text/plain")
    with pytest.raises(ValueError):
        store.get(key)
    assert list((tmp_path / "root").iterdir()) == []


def test_local_store_roundtrip_and_overwrite(tmp_path: Path):
    store = LocalStore(tmp_path, b"secret")
    store.put("jobs/a/video.mp4", b"first", "video/mp4")
    store.put("jobs/a/video.mp4", b"second", "video/mp4")  # a redelivered task overwrites
    assert store.get("jobs/a/video.mp4") == b"second"
    assert sorted(p.name for p in (tmp_path / "jobs" / "a").iterdir()) == ["video.mp4"]  # no temp file left
    with pytest.raises(BlobNotFound):
        store.get("jobs/a/canonical.png")


def test_local_signatures_bind_key_and_expiry(tmp_path: Path):
    store = LocalStore(tmp_path, b"secret")
    query = dict(p.split("=") for p in urlsplit(store.presign("jobs/a/x.png", 60)).query.split("&"))
    store.check_signature("jobs/a/x.png", query["exp"], query["sig"])
    with pytest.raises(InvalidSignature):
        store.check_signature("jobs/a/y.png", query["exp"], query["sig"])
    with pytest.raises(InvalidSignature):
        LocalStore(tmp_path, b"other secret").check_signature("jobs/a/x.png", query["exp"], query["sig"])
    expired = dict(p.split("=") for p in urlsplit(store.presign("jobs/a/x.png", -1)).query.split("&"))
    with pytest.raises(ExpiredSignature):
        store.check_signature("jobs/a/x.png", expired["exp"], expired["sig"])


def s3_store(endpoint: str, bucket: str, public: str | None = None) -> S3Store:
    return S3Store(
        make_settings(
            Path("/nonexistent"),
            storage_backend="s3",
            s3_endpoint_url=endpoint,
            s3_public_endpoint_url=public,
            s3_bucket=bucket,
            **S3_CREDENTIALS,
        )
    )


def test_s3_store_roundtrip(s3_endpoint: str, s3_bucket: str):
    store = s3_store(s3_endpoint, s3_bucket)
    store.ping()
    store.put("jobs/a/video.mp4", b"\x00mp4", "video/mp4")
    assert store.get("jobs/a/video.mp4") == b"\x00mp4"
    with pytest.raises(BlobNotFound):
        store.get("jobs/a/nothing.png")
    with pytest.raises(ValueError):
        store.put("../escape", b"x", "text/plain")


def test_s3_presign_uses_the_public_endpoint(s3_endpoint: str, s3_bucket: str):
    """Inside a deployment the API reaches S3 as 127.0.0.1 (say minio:9000); clients reach it as localhost."""
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = s3_store(s3_endpoint, s3_bucket, public=public)
    store.put("jobs/a/canonical.png", b"png bytes", "image/png")

    url = store.presign("jobs/a/canonical.png", 60)
    assert url.startswith(f"{public}/{s3_bucket}/jobs/a/canonical.png?")
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"png bytes"
    assert r.headers["content-type"] == "image/png"


def test_s3_problems_are_storage_unavailable(s3_endpoint: str):
    with pytest.raises(StorageUnavailable):
        s3_store(s3_endpoint, "no-such-bucket").ping()
    with pytest.raises(StorageUnavailable):
        s3_store(s3_endpoint, "no-such-bucket").put("jobs/a/x", b"x", "text/plain")


def test_the_api_hands_out_public_s3_urls(
    s3_endpoint: str, s3_bucket: str, redis_db: redis.Redis, tmp_path: Path
):
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    settings = make_settings(
        tmp_path,
        storage_backend="s3",
        s3_endpoint_url=s3_endpoint,
        s3_public_endpoint_url=public,
        s3_bucket=s3_bucket,
        **S3_CREDENTIALS,
    )
    with Server(settings) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        job_id = http.post("/generate", json={"seed": 1}).json()["id"]
        server.finish(job_id)

        doc = http.get(f"/jobs/{job_id}").json()
        for name, artifact in doc["artifacts"].items():
            assert artifact["url"].startswith(f"{public}/{s3_bucket}/jobs/{job_id}/"), name
            r = httpx.get(artifact["url"])
            assert r.status_code == 200 and len(r.content) == artifact["bytes"]
        assert http.get("/files/jobs/x").status_code == 404  # no local file route with S3
        assert http.get("/readyz").json()["checks"]["storage"] == "ok"
