"""Every knob of the API and the workers: one pydantic-settings class, env prefix ``GENDEF_``.

Defaults are the embedded mode (``make run``): Redis on the local machine, artifacts in ./var/artifacts, the
models shipped in the repository. Production sets ``GENDEF_ENV=production``, ``GENDEF_REDIS_URL`` and the
``GENDEF_S3_*`` variables. docs/CONFIG.md lists them all.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.video import Limits

# The shipped models, found from this file so the service never imports model/ to locate them.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"

MIN_SECRET_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENDEF_", extra="ignore", env_ignore_empty=True
    )  # empty = default

    # "production" refuses insecure defaults (see url_secret); "embedded" is the single-machine `make run` mode.
    env: Literal["embedded", "production"] = "embedded"

    # Broker of the Celery queues and home of the job records.
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Where inputs and artifacts live: a local folder served by the API, or an S3-compatible bucket.
    storage_backend: Literal["local", "s3"] = "local"
    local_storage_dir: Path = Path("var/artifacts")
    # Signs the API's own /files URLs (local backend only). Empty: a random per-process secret in embedded
    # mode, refused in production. Set the same value for every API process behind one address.
    url_secret: SecretStr = SecretStr("")

    s3_endpoint_url: str | None = None  # None: AWS itself; e.g. http://minio:9000 inside compose
    s3_public_endpoint_url: str | None = None  # used only to presign: the address clients reach
    s3_bucket: str = "gendef"
    s3_access_key_id: str | None = None  # None: boto3's usual credential chain
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # Lifetime of presigned artifact URLs; every GET /jobs/{id} signs fresh ones.
    url_ttl_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    # A job record expires this long after its last change (artifacts are not deleted by it).
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60)

    # API bounds on what a request may ask for.
    max_frames: int = Field(128, ge=1)  # num_frames limit of every model (each also has its own max_frames)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_upload_pixels: int = Field(4096 * 4096, ge=1)
    # POST /decompose uploads: checked from the container's header and packets before any frame is decoded.
    max_video_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_video_frames: int = Field(3000, ge=1)  # frames in the whole file (only the first num_frames are used)
    max_video_pixels: int = Field(1920 * 1080, ge=1)  # width x height of a frame
    max_video_duration_s: float = Field(120.0, gt=0)
    # What one /decompose job fits: frames taken from the clip, and the long side they are scaled to (pixels).
    max_decompose_frames: int = Field(256, ge=2)
    max_decompose_resolution: int = Field(512, ge=16)
    # The most frames one fit subtask of a /decompose job fits (worker/fanout.py): a longer shot is split into
    # segments of at most this many frames, consecutive ones sharing a few, each fitted on whichever worker is free.
    decompose_segment_frames: int = Field(64, ge=16)
    # POST /render: the largest frame it makes (width x height, after scaling) and its frames (after the frame-rate
    # multiplier).
    max_render_pixels: int = Field(2048 * 1152, ge=1)
    max_render_frames: int = Field(512, ge=1)

    # The models served (core/models.py): each subfolder of models_dir holding a checkpoint is one model, named by
    # its folder; models_dir is a local folder or s3://bucket/prefix (on the S3 settings above). default_model: the
    # model of requests that name none; empty: `mnist` when served, else the first by name. Read by the API (GET
    # /models, checks) and the workers (loading).
    models_dir: str = str(DEFAULT_MODELS_DIR)
    default_model: str = ""
    # From a bucket: how long the API reuses its list of the models, and where a worker keeps the models it has
    # downloaded (a folder per model and version).
    models_list_cache_s: float = Field(5.0, ge=0)
    models_cache_dir: Path = Path("var/models")
    # Models whose generate/resample jobs go to a queue of their own, "{generate_queue}-{model}" (comma-separated):
    # workers that consume only such queues (celery -Q) serve only those models. Other models use generate_queue.
    model_queues: str = ""

    # Worker side.
    # Models a worker process keeps loaded at once; loading another evicts the least recently used.
    max_loaded_models: int = Field(2, ge=1)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    # Inference (model/inference.py): "auto" = bfloat16 autocast on CUDA, float32 on the CPU; channels_last "auto" =
    # on (CUDA and CPU alike, measured); compile_model: torch.compile plus a warm-up sample when the worker starts.
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile_model: bool = False
    # CPU threads of each worker process's torch ops (torch.set_num_threads, set before the model loads). Results
    # depend on it in their last bits, so every worker keeps the same value whatever its core count: a fixed
    # number, not "all cores", keeps same seeds -> same fields across workers.
    torch_threads: int = Field(1, ge=1)
    # Dynamic batching (worker/batching.py): a worker that starts a generate/resample job also takes up to
    # batch_max - 1 more such jobs already queued, waiting at most batch_wait_ms for them. 1: no batching.
    batch_max: int = Field(8, ge=1)
    batch_wait_ms: int = Field(20, ge=0)
    # How a batch runs (worker/batching.py): "stack" (one forward pass for the jobs of a frame count), "pipeline"
    # (one job samples while the one before it encodes and uploads), "off" (no batching); "auto" picks per device.
    batch_mode: Literal["auto", "stack", "pipeline", "off"] = "auto"
    # Each task's: a decompose job's planning, each of its units' fits (64 frames at 256 px: ~5 min on 2 CPU cores)
    # and its join are limited apart.
    job_time_limit_s: int = Field(1800, ge=1)
    # Celery queues: generate and resample need the generator; edit only warps, so it may go to other workers.
    generate_queue: str = "gendef-generate"
    edit_queue: str = "gendef-edit"

    # A job recorded by the API whose task was not sent within this long (the API died or lost Redis between the
    # two steps) is failed `queue_unavailable` by the workers' sweep, so it holds no place in a queue or limit.
    send_timeout_s: float = Field(60.0, gt=0)
    # A job whose worker died this many times (killed, out of memory) ends failed with `worker_lost`.
    max_attempts: int = Field(3, ge=1)
    # The worker retries a store it cannot reach this many times, waiting backoff, 2x, 4x ... between tries,
    # then fails the job with `storage_unavailable`.
    storage_attempts: int = Field(5, ge=1)
    storage_backoff_s: float = Field(1.0, ge=0)

    # Access: comma-separated SHA-256 hex digests of the accepted API keys (`printf %s "$KEY" | sha256sum`).
    # Empty: no keys, every caller may use every job (keep such an API on 127.0.0.1).
    api_keys: str = ""
    max_active_jobs_per_key: int = Field(10, ge=1)  # queued + running jobs of one key; 429 past it
    idempotency_ttl_s: int = Field(24 * 3600, ge=1)  # how long an Idempotency-Key is remembered

    # /readyz: how long a worker ping waits, and how long a readiness answer is reused.
    worker_ping_timeout_s: float = Field(1.0, gt=0)
    readiness_cache_s: float = Field(5.0, ge=0)

    # Webhooks (core/webhooks.py): HMAC-SHA256 key of their X-Gendef-Signature header, at least 32 characters;
    # empty: requests that ask for a webhook are refused. Deliveries are Celery tasks on webhook_queue, tried
    # webhook_attempts times, waiting webhook_backoff_s, 2x, 4x ... between tries.
    webhook_secret: SecretStr = SecretStr("")
    webhook_queue: str = "gendef-webhook"
    webhook_attempts: int = Field(6, ge=1)
    webhook_backoff_s: float = Field(2.0, ge=0)
    webhook_timeout_s: float = Field(10.0, gt=0)  # per delivery attempt
    # Receivers on internal addresses the workers may POST to: comma-separated CIDRs (10.0.0.0/8) and host names
    # (hooks.internal). Every other loopback, private, link-local, multicast, reserved or otherwise non-public
    # address is refused, checked on the address a name resolves to when a delivery is made.
    webhook_allow: str = ""
    # GET /jobs/{id}/events: how often the stream reads the job record, and the heartbeat period when idle.
    events_poll_s: float = Field(0.25, gt=0)
    events_heartbeat_s: float = Field(15.0, gt=0)

    @field_validator("models_dir", mode="before")
    @classmethod
    def _models_dir(cls, value: object) -> object:
        return str(value) if isinstance(value, PurePath) else value

    @property
    def model_queue_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.model_queues.split(",") if name.strip())

    @property
    def api_key_hashes(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.api_keys.split(",") if h.strip())

    @model_validator(mode="after")
    def _api_keys(self) -> Settings:
        for digest in self.api_key_hashes:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(
                    f"GENDEF_API_KEYS holds SHA-256 hex digests of the keys, not the keys: an entry of {len(digest)} "
                    'characters is not 64 hex digits (make one with `printf %s "$KEY" | sha256sum`)'
                )
        return self

    @model_validator(mode="after")
    def _webhook_secret(self) -> Settings:
        if 0 < len(self.webhook_secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(
                f"GENDEF_WEBHOOK_SECRET is too short: use at least {MIN_SECRET_CHARS} characters"
            )
        return self

    @model_validator(mode="after")
    def _url_secret(self) -> Settings:
        secret = self.url_secret.get_secret_value()
        if len(secret) >= MIN_SECRET_CHARS:
            return self
        if self.env == "production" and self.storage_backend == "local":
            raise ValueError(
                f"GENDEF_URL_SECRET must be set to a random string of at least {MIN_SECRET_CHARS} characters in "
                "production with local storage (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if secret:
            raise ValueError(f"GENDEF_URL_SECRET is too short: use at least {MIN_SECRET_CHARS} characters")
        self.url_secret = SecretStr(secrets.token_urlsafe(32))
        return self


def video_limits(settings: Settings) -> Limits:
    """The per-frame checks of a /decompose upload: its frames are decoded by the API and the worker alike."""
    return Limits(
        max_pixels=settings.max_video_pixels,
        max_frames=settings.max_video_frames,
        max_duration_s=settings.max_video_duration_s,
        max_total_pixels=settings.max_video_pixels * settings.max_decompose_frames,  # the frames a job uses
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
