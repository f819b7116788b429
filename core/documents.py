"""The job document: the public view of a job record, as GET /jobs/{id}, the event stream and webhooks show it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.jobs import JobRecord


class ArtifactOut(BaseModel):
    url: str = Field(description="presigned GET URL, fresh at each GET /jobs/{id}, expiring")
    content_type: str
    bytes: int


class JobError(BaseModel):
    code: str = Field(description="stable machine code")
    message: str = Field(description="what happened and what to do")


class JobMetrics(BaseModel):
    """Durations in seconds of what is over: each is null until it has ended (the document changes only when the
    job does; a page shows the time so far from created_at/started_at)."""

    queue_time: float | None = Field(
        description="submission to the start of the latest attempt (or to the "
        "cancel of a job that never started)"
    )
    run_time: float | None = Field(description="start of the latest attempt to its end")
    stage_times: dict[str, float] = Field(
        description="time spent in each finished stage of the latest attempt, "
        "in order (loading, sampling, warping, encoding, uploading)"
    )

    @classmethod
    def from_record(cls, job: JobRecord) -> JobMetrics:
        stages = list(job.stage_started_at.items())
        stage_times = {}
        for i, (stage, start) in enumerate(stages):
            end = stages[i + 1][1] if i + 1 < len(stages) else job.finished_at
            if end:
                stage_times[stage] = _seconds(start, end)
        return cls(
            queue_time=_seconds(job.created_at, job.started_at or job.finished_at),
            run_time=_seconds(job.started_at, job.finished_at),
            stage_times=stage_times,
        )


def _seconds(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


class JobDocument(BaseModel):
    id: str
    kind: Literal["generate", "resample", "edit", "track", "segment", "decompose", "render"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    progress: float = Field(ge=0, le=1)
    stage: str | None = Field(
        default=None, description="while running: loading, sampling, warping, encoding or uploading"
    )
    params: dict[str, Any]
    parent_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: JobError | None
    artifacts: dict[str, ArtifactOut] = Field(
        description="once succeeded (else {}): video, canonical, deformation (generate, resample, edit, "
        "decompose); video, tracks (track); video, masks (segment); video, canonical, deformation (render)",
    )
    result: dict[str, Any] | None = Field(
        default=None,
        description="figures a job reports: decompose gives frames, width, height, steps, shot_count and "
        "shots (each unit, a shot or a segment of one, with its step and reconstruction PSNR while fitting), "
        "then step, psnr_db, canonical_width, canonical_height; render gives frames, width, height, fps; else null",
    )
    queue_position: int | None = Field(
        default=None,
        description="while queued: how many jobs of its queue go before it (0 = next); else null",
    )
    metrics: JobMetrics

    @classmethod
    def from_record(
        cls,
        job: JobRecord,
        presign: Callable[[str], str],
        queue_position: int | None = None,
    ) -> JobDocument:
        """The public view of a job record; ``presign(key)`` turns each artifact key into a URL;
        ``queue_position`` is JobStore.queue_position(job)."""
        artifacts = {}
        if job.status == "succeeded":
            artifacts = {
                name: ArtifactOut(url=presign(a.key), content_type=a.content_type, bytes=a.bytes)
                for name, a in job.artifacts.items()
            }
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            stage=job.stage,
            params=job.params,
            parent_id=job.parent_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=JobError(**job.error) if job.error else None,
            artifacts=artifacts,
            result=job.result,
            queue_position=queue_position,
            metrics=JobMetrics.from_record(job),
        )
