"""Settings refuse insecure production values; the job store keeps a cancel and a worker update consistent."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from core.jobs import Artifact, JobStore
from core.settings import DEFAULT_MODELS_DIR, Settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch):
    for name in ("GENDEF_ENV", "GENDEF_REDIS_URL", "GENDEF_STORAGE_BACKEND", "GENDEF_URL_SECRET"):
        monkeypatch.delenv(name, raising=False)
    a, b = Settings(), Settings()
    assert a.redis_url == "redis://127.0.0.1:6379/0" and a.storage_backend == "local"
    assert (
        Path(a.models_dir) == DEFAULT_MODELS_DIR == Path(__file__).resolve().parents[2] / "model" / "weights"
    )
    assert a.default_model == "" and a.max_loaded_models == 2
    assert a.max_frames == 128
    # No secret configured: a random one per process (per Settings object here).
    assert len(a.url_secret.get_secret_value()) >= 32
    assert a.url_secret.get_secret_value() != b.url_secret.get_secret_value()


def test_env_variables_set_fields(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GENDEF_MAX_FRAMES", "64")
    monkeypatch.setenv("GENDEF_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("GENDEF_URL_SECRET", "s" * 32)
    s = Settings()
    assert s.max_frames == 64 and s.storage_backend == "s3" and s.url_secret.get_secret_value() == "s" * 32


def test_production_with_local_storage_needs_a_url_secret():
    with pytest.raises(ValidationError, match="GENDEF_URL_SECRET must be set"):
        Settings(env="production", storage_backend="local", url_secret="")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(env="production", storage_backend="local", url_secret="short")
    with pytest.raises(ValidationError, match="too short"):  # a short secret is refused in any mode
        Settings(url_secret="short")
    assert Settings(env="production", storage_backend="local", url_secret="x" * 32)
    assert Settings(env="production", storage_backend="s3")  # S3 presigns with its own credentials


@pytest.fixture
def store(redis_db: redis.Redis) -> JobStore:
    return JobStore(redis_db, ttl_s=3600)


def test_records_expire_after_their_ttl_from_the_last_change(store: JobStore, redis_db: redis.Redis):
    job = store.create("generate", {"seed": 1})
    redis_db.expire(f"gendef:job:{job.id}", 10)
    store.mark_running(job.id)
    assert 3590 < redis_db.ttl(f"gendef:job:{job.id}") <= 3600


def test_a_worker_lifecycle(store: JobStore):
    job = store.create("edit", {"fps": 8}, parent_id="p", inputs={"image": "jobs/x/input/image.png"})
    assert store.mark_running(job.id).attempts == 1
    assert store.mark_running(job.id).attempts == 2  # a redelivered task counts another attempt
    store.set_progress(job.id, 0.5, "warping")
    assert (store.get(job.id).progress, store.get(job.id).stage) == (0.5, "warping")
    with pytest.raises(ValueError):
        store.set_progress(job.id, 0.6, "dreaming")

    artifacts = {"video": Artifact("jobs/x/video.mp4", "video/mp4", 123)}
    done = store.mark_succeeded(job.id, artifacts)
    assert done.status == "succeeded" and done.progress == 1.0 and done.artifacts == artifacts
    assert store.get(job.id) == done
    # Finished is final: a late failure or cancel changes nothing.
    assert store.mark_failed(job.id, "x", "y") == done
    assert store.cancel(job.id) == done
    assert store.get("nope") is None and store.mark_running("nope") is None


def test_cancel_and_start_racing_never_lose_the_cancel(store: JobStore):
    """Each job is canceled by one thread while another starts it: either the cancel came first (the job is
    canceled and the worker's start leaves it so) or the start came first (running, with cancel_requested)."""
    jobs = [store.create("generate", {"seed": i}).id for i in range(40)]

    def cancel_all() -> None:
        for job_id in jobs:
            store.cancel(job_id)

    def start_all() -> None:
        for job_id in jobs:
            store.mark_running(job_id)
            store.set_progress(job_id, 0.1, "sampling")

    threads = [threading.Thread(target=cancel_all), threading.Thread(target=start_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for job_id in jobs:
        job = store.get(job_id)
        assert job.cancel_requested
        assert (job.status, job.attempts) in {("canceled", 0), ("running", 1)}, job
        assert store.cancel_requested(job_id)
