"""Request and response bodies of the public API (docs/API.md, field by field); the job document is
core/documents.py's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StrictInt

from service.limits import DEFAULT_FPS, DEFAULT_FRAMES, MAX_FPS, MAX_ID_CHARS, MAX_POINTS, MAX_SEED, MIN_FPS

WebhookEvent = Literal["start", "completed"]  # the job turned running / ended (succeeded, failed or canceled)


class GenerateRequest(BaseModel):
    """POST /generate. The upper bound of num_frames is the deployment's GENDEF_MAX_FRAMES and the model's."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        strict=True,
        description="content seed: decides the canonical image; "
        "null draws a random one (recorded in the job's params). Ignored with canonical_from (the parent's is used)",
    )
    motion_seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        strict=True,
        description="motion seed: decides the deformation fields; null draws a random one",
    )
    num_frames: int = Field(
        default=DEFAULT_FRAMES,
        ge=1,
        strict=True,
        description="frames in the video (at most the model's max_frames)",
    )
    fps: int = Field(
        default=DEFAULT_FPS,
        ge=MIN_FPS,
        le=MAX_FPS,
        strict=True,
        description="frame rate of the encoded video",
    )
    labels: list[StrictInt] | None = Field(
        default=None,
        min_length=1,
        description="a conditional model's classes to make, by their indices in GET /models' `classes` (as many "
        "distinct ones as its `labels_per_video`: [3, 7] on mnist is a 3 and a 7); null: drawn from the seed. The "
        "seed still decides everything else. Not with canonical_from (the parent's labels are kept)",
    )
    canonical_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="id of a finished job: reuse its canonical image, sample new motion only (job kind resample)",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="name of a model of GET /models; null: the default model (with canonical_from: that job's)",
    )
    webhook: HttpUrl | None = Field(
        default=None,
        description="http(s) URL POSTed the job document on the webhook_events (signed; see the "
        "X-Gendef-Signature header in docs/CONFIG.md)",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        min_length=1,
        description="which events are sent to webhook (default: completed)",
    )


class TrackRequest(BaseModel):
    """POST /track: where points of the canonical image (or of frame `frame`) are in every frame."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="a finished generate, resample, edit or decompose job whose fields are used",
    )
    points: list[tuple[float, float]] = Field(
        min_length=1,
        max_length=MAX_POINTS,
        description="[x, y] pixel coordinates, pixel centres at integers (an "
        "image W wide spans x = -0.5 to W - 0.5), in the canonical image or, with `frame`, in that frame",
    )
    frame: int | None = Field(
        default=None,
        ge=0,
        description="give the points in this frame (0-based) instead of the canonical image",
    )
    shot: int | None = Field(
        default=None,
        ge=0,
        description="a decomposed clip's shot (0-based): the points are in that shot's canonical image (or, with "
        "`frame`, in its frame `frame`, counted from the shot's first) and the tracks cover its frames; "
        "default: the whole video",
    )


class ModelOut(BaseModel):
    """GET /models: one model the deployment serves."""

    name: str = Field(description="what POST /generate's `model` takes")
    version: str = Field(description="digest of the weights (SHA-256 prefix): a retrained model has another")
    resolution: int = Field(description="width and height of its frames and canonical image, in pixels")
    max_frames: int = Field(description="largest num_frames it makes in this deployment")
    trained_on: str | None = Field(
        description="what it was trained on: its config.json's `data` (null: the checkpoint does not say)"
    )
    classes: list[str] = Field(
        description="the classes a conditional model's videos are made of, by name, in the order of their "
        "indices (POST /generate's `labels`); [] for an unconditional model"
    )
    labels_per_video: int = Field(description="how many distinct classes `labels` names (0: unconditional)")
    default: bool = Field(description="used by requests that name no model")


class Message(BaseModel):
    detail: str


class ReadinessReport(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="redis, storage, workers: 'ok' or what is wrong")
