"""/healthz, /readyz, /metrics, and what the API answers when Redis or the store is down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from core.jobs import Artifact
from tests.redis_server import redis_url
from tests.service.helpers import REDIS_DB, S3_CREDENTIALS, Server, free_port, make_settings, png_bytes


def test_healthz(http: httpx.Client):
    assert http.get("/healthz").json() == {"status": "ok"}


def test_readyz_without_a_worker_is_503_and_says_so(http: httpx.Client):
    r = http.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {
        "ready": False,
        "checks": {"redis": "ok", "storage": "ok", "workers": "no worker answered a ping; start one"},
    }


def test_readyz_with_a_live_celery_worker_is_200(http: httpx.Client, tmp_path: Path):
    """A real Celery worker on the same broker answers the ping (it consumes a queue of its own, so the tests'
    queued tasks stay put)."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "--broker",
            redis_url(REDIS_DB),
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
            "-Q",
            "readyz-probe",
            "-n",
            f"probe-{os.getpid()}@test",
            "--loglevel=warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while (r := http.get("/readyz")).status_code != 200:
            assert worker.poll() is None and time.monotonic() < deadline, r.json()
            time.sleep(0.3)
        assert r.json() == {"ready": True, "checks": {"redis": "ok", "storage": "ok", "workers": "ok"}}
    finally:
        worker.terminate()
        worker.wait(10)


def test_metrics_count_jobs_by_kind_and_status_and_queue_depth(http: httpx.Client, server: Server):
    ids = [http.post("/generate", json={"seed": i}).json()["id"] for i in range(4)]
    http.post(f"/jobs/{ids[0]}/cancel")
    server.jobs.mark_running(ids[1])
    server.finish(ids[2])  # two queued tasks remain waiting: ids[1], ids[3] were never consumed by a worker
    server.jobs.mark_running(ids[3])
    server.jobs.mark_failed(ids[3], "model_error", "boom")

    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = set(r.text.splitlines())
    for kind, status, n in [
        ("generate", "canceled", 1),
        ("generate", "running", 1),
        ("generate", "succeeded", 1),
        ("generate", "failed", 1),
        ("generate", "queued", 0),
        ("edit", "queued", 0),
    ]:
        assert f'gendef_jobs{{kind="{kind}",status="{status}"}} {n}.0' in lines
    # Nothing consumes the queue here: the four tasks sent are all still waiting.
    assert 'gendef_queue_depth{queue="gendef-generate"} 4.0' in lines
    assert 'gendef_queue_depth{queue="gendef-edit"} 0.0' in lines
    # One duration per job that ran to an end: the succeeded and the failed one, none for the canceled one.
    assert 'gendef_job_duration_seconds_count{kind="generate",status="succeeded"} 1.0' in lines
    assert 'gendef_job_duration_seconds_count{kind="generate",status="failed"} 1.0' in lines
    assert 'gendef_job_duration_seconds_bucket{kind="generate",le="0.5",status="succeeded"} 1.0' in lines
    assert not any('status="canceled"' in line for line in lines if line.startswith("gendef_job_duration"))


@pytest.fixture
def redis_down_server(tmp_path: Path):
    """An API whose Redis is a port nobody listens on."""
    with Server(make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")) as s:
        yield s


def test_redis_down_is_503_with_a_message(redis_down_server: Server):
    with httpx.Client(base_url=redis_down_server.url, timeout=10) as http:
        for method, path, kwargs in [
            ("POST", "/generate", {"json": {}}),
            ("GET", "/jobs/abc", {}),
            ("POST", "/jobs/abc/cancel", {}),
            ("POST", "/edit", {"data": {"job_id": "abc"}, "files": {"image": ("a.png", png_bytes())}}),
            ("GET", "/metrics", {}),
        ]:
            r = http.request(method, path, **kwargs)
            assert r.status_code == 503, path
            assert r.json()["detail"] == "the job store (Redis) is unreachable; try again in a few seconds"
            assert r.headers["retry-after"] == "5"
        r = http.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("unreachable")
        assert http.get("/healthz").status_code == 200


def test_store_down_during_an_edit_is_503(redis_db: redis.Redis, tmp_path: Path):
    settings = make_settings(
        tmp_path,
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_bucket="gone",
        **S3_CREDENTIALS,
    )
    with Server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        parent = server.jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": 16, "fps": 8})
        server.jobs.mark_running(parent.id)
        server.jobs.mark_succeeded(
            parent.id, {"canonical": Artifact(f"jobs/{parent.id}/canonical.png", "image/png", 9)}
        )

        r = http.post("/edit", data={"job_id": parent.id}, files={"image": ("a.png", png_bytes())})
        assert r.status_code == 503
        assert r.json()["detail"] == "the artifact store is unavailable; try again in a few seconds"
        assert redis_db.llen("gendef-edit") == 0
        assert http.get("/readyz").json()["checks"]["storage"].startswith("unavailable: S3 unreachable")


def test_the_api_never_imports_torch_model_or_worker(tmp_path: Path):
    code = (
        "import sys, service.app, core.settings, core.jobs, core.storage\n"
        "service.app.create_app()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'worker'))\n"
        "assert not bad, bad\n"
    )
    env = os.environ | {"GENDEF_REDIS_URL": redis_url(REDIS_DB), "GENDEF_LOCAL_STORAGE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
