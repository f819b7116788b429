"""Helpers of the service tests: a real API server in a thread, test settings, images."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image

from core.jobs import Artifact, JobRecord, JobStore
from core.settings import Settings
from core.storage import LocalStore, artifact_key
from service.app import create_app
from tests.redis_server import redis_url

REDIS_DB = 11
MAX_UPLOAD_BYTES = 256 * 1024
MAX_UPLOAD_PIXELS = 512 * 512
CANONICAL_SIZE = (64, 64)
S3_CREDENTIALS = dict(s3_access_key_id="test", s3_secret_access_key="test", s3_region="us-east-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(size: tuple[int, int] = CANONICAL_SIZE, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A noise image (noise compresses badly, so a cut file is missing pixel data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


class Server:
    """uvicorn serving create_app(settings) in a thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    @property
    def jobs(self) -> JobStore:
        return self.app.state.services.jobs

    @property
    def blobs(self) -> LocalStore:
        return self.app.state.services.blobs

    def finish(self, job_id: str, canonical: bytes | None = None) -> JobRecord:
        """Play the worker: run the job and store its artifacts (a real canonical PNG, placeholder video/npz)."""
        canonical = png_bytes() if canonical is None else canonical
        artifacts = {}
        for name, filename, content_type, data in [
            ("video", "video.mp4", "video/mp4", b"mp4 " + job_id.encode()),
            ("canonical", "canonical.png", "image/png", canonical),
            ("deformation", "deformation.npz", "application/octet-stream", b"npz " + job_id.encode()),
        ]:
            key = artifact_key(job_id, filename)
            self.blobs.put(key, data, content_type)
            artifacts[name] = Artifact(key, content_type, len(data))
        self.jobs.mark_running(job_id)
        return self.jobs.mark_succeeded(job_id, artifacts)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values = dict(
        redis_url=redis_url(REDIS_DB),
        local_storage_dir=tmp_path / "artifacts",
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_upload_pixels=MAX_UPLOAD_PIXELS,
        worker_ping_timeout_s=0.2,
        readiness_cache_s=0,
    )
    return Settings(**(values | overrides))
