"""Models from an S3 bucket (GENDEF_MODELS_DIR=s3://bucket/prefix) on moto's S3 server over HTTP: a deployment of
its own (an API and a Celery worker process, on queues of their own) whose models are published to the bucket as an
operator would, while it runs: listed without a restart once whole, served from the worker's cache, replaced,
removed, and published corrupt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.models import etag_version
from tests.e2e.conftest import BUCKET, consumer_paused, deployment, own_queues
from tests.e2e.test_jobs import submit, succeeded, wait_done

PREFIX = "published/models"
FILES = ("config.json", "MODEL_CARD.md", "model.safetensors")  # the weights last, as docs/DEPLOY.md says
LIST_CACHE_S = 0.5


def publish(
    s3, name: str, folder: Path, files: tuple[str, ...] = FILES, weights: bytes | None = None
) -> None:
    for file in files:
        body = (
            weights if file == "model.safetensors" and weights is not None else (folder / file).read_bytes()
        )
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}/{file}", Body=body)


def retire(s3, name: str) -> None:
    for file in FILES:
        s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}/{file}")


@pytest.fixture(scope="module")
def bucket_api(
    deployment_env: dict[str, str], e2e_logs: Path, s3, tiny_checkpoint: Path, tmp_path_factory
) -> Iterator[tuple[str, Path, str]]:
    """(API URL, the worker's model cache, the generate queue) of a deployment serving the bucket's models."""
    publish(s3, "tiny", tiny_checkpoint)
    cache = tmp_path_factory.mktemp("model-cache")
    with own_queues() as queues:
        env = deployment_env | queues
        env |= {
            "GENDEF_MODELS_DIR": f"s3://{BUCKET}/{PREFIX}",
            "GENDEF_MODELS_LIST_CACHE_S": str(LIST_CACHE_S),
            "GENDEF_MODELS_CACHE_DIR": str(cache),
        }
        with deployment(env, e2e_logs, "bucket-") as url:
            yield url, cache, queues["GENDEF_GENERATE_QUEUE"]


@pytest.fixture
def bucket_http(bucket_api: tuple[str, Path, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bucket_api[0], timeout=30) as client:
        yield client


def listed(http: httpx.Client) -> dict[str, dict]:
    return {m["name"]: m for m in http.get("/models").json()}


def until_listed(http: httpx.Client, check) -> dict[str, dict]:
    """GET /models until check(models) holds (the API reuses its list for LIST_CACHE_S)."""
    deadline = time.monotonic() + 10 * LIST_CACHE_S + 5
    while not check(models := listed(http)):
        assert time.monotonic() < deadline, models
        time.sleep(0.1)
    return models


def generate(http: httpx.Client, model: str, **body) -> dict:
    return submit(
        http, "/generate", json={"model": model, "seed": 5, "motion_seed": 6, "num_frames": 4} | body
    )


def test_the_api_and_the_worker_read_the_models_from_the_bucket(
    bucket_http: httpx.Client, bucket_api, http: httpx.Client, s3
):
    [tiny] = listed(bucket_http).values()
    etag = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/tiny/model.safetensors")["ETag"]
    assert tiny["name"] == "tiny" and tiny["version"] == etag_version(etag) and tiny["default"]
    job, files = succeeded(bucket_http, generate(bucket_http, "tiny")["id"])
    assert job["params"]["version"] == tiny["version"]
    cached = bucket_api[1] / "tiny" / tiny["version"]
    assert sorted(p.name for p in cached.iterdir()) == sorted(FILES)
    # the same weights served from a folder (the other deployment) make the same video
    _, from_folder = succeeded(http, generate(http, "tiny")["id"])
    assert files["canonical"] == from_folder["canonical"]


def test_a_model_published_while_running_is_served_once_whole(bucket_http: httpx.Client, s3, tiny_checkpoint):
    publish(s3, "late", tiny_checkpoint, files=FILES[:2])  # config and card: not a model yet
    time.sleep(2 * LIST_CACHE_S)
    assert "late" not in listed(bucket_http)
    assert bucket_http.post("/generate", json={"model": "late"}).status_code == 422
    publish(s3, "late", tiny_checkpoint, files=FILES[2:])
    until_listed(bucket_http, lambda models: "late" in models)
    succeeded(bucket_http, generate(bucket_http, "late")["id"])


def test_a_model_replaced_or_removed_under_queued_jobs_behaves_as_a_folder_does(
    bucket_http: httpx.Client, bucket_api, s3, tiny_checkpoint, models_dir
):
    publish(s3, "swap", tiny_checkpoint)
    publish(s3, "gone", tiny_checkpoint)
    until_listed(bucket_http, lambda models: {"swap", "gone"} <= models.keys())
    parent, _ = succeeded(bucket_http, generate(bucket_http, "swap")["id"])
    with consumer_paused(bucket_api[2]):
        queued_swap, queued_gone = generate(bucket_http, "swap"), generate(bucket_http, "gone")
        publish(s3, "swap", models_dir / "tiny64")  # retrained: other weights (and another resolution)
        retire(s3, "gone")
    for job, gone in ((queued_swap, False), (queued_gone, True)):
        done, _ = wait_done(bucket_http, job["id"])
        assert done["status"] == "failed" and done["error"]["code"] == "model_unavailable", done
        assert ("no longer served" if gone else "now version") in done["error"]["message"]
    models = until_listed(
        bucket_http, lambda models: models["swap"]["version"] != parent["params"]["version"]
    )
    assert models["swap"]["resolution"] == 64 and "gone" not in models
    response = bucket_http.post("/generate", json={"canonical_from": parent["id"]})
    assert response.status_code == 409 and parent["params"]["version"] in response.text
    succeeded(bucket_http, generate(bucket_http, "swap")["id"])  # the new version


def test_corrupt_weights_fail_their_jobs_clearly_and_are_not_kept(
    bucket_http: httpx.Client, bucket_api, s3, tiny_checkpoint
):
    publish(s3, "broken", tiny_checkpoint, weights=b"not a safetensors file")
    version = until_listed(bucket_http, lambda models: "broken" in models)["broken"]["version"]
    for _ in range(2):  # fetched again by the next job, never kept
        done, _ = wait_done(bucket_http, generate(bucket_http, "broken")["id"])
        assert done["status"] == "failed" and done["error"]["code"] == "model_error", done
        message = done["error"]["message"]
        assert f"model broken version {version}" in message and "whole checkpoint" in message, message
        assert not (bucket_api[1] / "broken").exists()
    publish(s3, "broken", tiny_checkpoint)  # published again, whole
    until_listed(bucket_http, lambda models: models["broken"]["version"] != version)
    succeeded(bucket_http, generate(bucket_http, "broken")["id"])
    succeeded(bucket_http, generate(bucket_http, "tiny")["id"])  # and the worker went on all along
