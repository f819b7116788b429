"""The application tasks: gendef.track, gendef.segment (edit queue: they only read a job's fields) and
gendef.decompose (generate queue: an optimisation). Same rules as worker/tasks.py: a task takes a job id, runs as
stages with cancel checks between them, uploads under keys derived from the job id and presents the artifacts only
on success; model/apps.py and model/decompose.py do the work.
"""

from __future__ import annotations

import colorsys
import io
import json
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.apps import frame_points_to_canonical, propagate_mask, track_points
from model.decompose import DecomposeConfig, decompose, read_clip
from model.warp import render
from service.jobs import Artifact
from worker import media
from worker.celery_app import app
from worker.runtime import JobFailure
from worker.tasks import JOB_KINDS, JobRun, JobTask, run_task

log = logging.getLogger(__name__)

FITTING_SHARE = 0.9  # of a decompose job's progress: the fit; encoding and uploading share the rest
OVERLAY_ALPHA = 0.5  # weight of a label's colour over the frame in the segment video


def palette(count: int) -> np.ndarray:
    """(count, 3) uint8 distinct saturated colours (hues spaced by the golden ratio)."""
    hues = (np.arange(count) * 0.618034) % 1.0
    return np.array(
        [[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.9, 1.0)] for h in hues], dtype=np.uint8
    )


def source_fields(run: JobRun) -> tuple[torch.Tensor, torch.Tensor]:
    """The source job's canonical image (3, Hc, Wc) and fields (T, H, W, 2)."""
    canonical_png = run.parent_blob("canonical.png")
    deformation_npz = run.parent_blob("deformation.npz")
    try:
        fields, _ = media.decode_fields(deformation_npz)  # (T, H, W, 2)
        canonical, _ = media.decode_image(canonical_png)  # (3, Hc, Wc)
    except media.MediaError as e:
        raise JobFailure(
            "parent_missing", f"the stored artifacts of source job {run.job.parent_id} are unreadable ({e})"
        ) from e
    return canonical, fields


def do_track(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    canonical, fields = source_fields(run)
    run.stage("tracking")
    Hc, Wc = canonical.shape[1:]
    points = torch.tensor(params["points"], dtype=torch.float32)  # (N, 2) px
    frame = params.get("frame")
    if frame is not None:
        if not 0 <= frame < fields.shape[0]:
            raise JobFailure(
                "invalid_input", f"frame {frame} does not exist: the source job has {fields.shape[0]} frames"
            )
        points = frame_points_to_canonical(fields, frame, points, (Hc, Wc))  # (N, 2) canonical px
    positions, visible = track_points(fields, points, (Hc, Wc))  # (T, N, 2), (T, N)
    tracks = [
        [
            {"x": round(float(x), 3), "y": round(float(y), 3), "visible": bool(v)}
            for (x, y), v in zip(pos.tolist(), vis.tolist(), strict=True)
        ]
        for pos, vis in zip(positions, visible, strict=True)
    ]
    run.stage("encoding")
    frames = media.to_uint8(render(canonical[None], fields[None])[0])  # (T, H, W, 3)
    colours = palette(points.shape[0])
    radius = max(1.5, frames.shape[2] / 64)
    drawn = []
    for image, pos, vis in zip(frames, positions.tolist(), visible.tolist(), strict=True):
        picture = Image.fromarray(image)
        draw = ImageDraw.Draw(picture)
        for (x, y), v, colour in zip(pos, vis, colours.tolist(), strict=True):
            if v:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(colour))
        drawn.append(np.asarray(picture))
    files = {
        "tracks": json.dumps(tracks).encode(),
        "video": media.encode_video(media.from_uint8(np.stack(drawn)), int(params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


def do_segment(run: JobRun) -> dict[str, Artifact]:
    canonical, fields = source_fields(run)
    upload = run.input_blob("mask")
    run.stage("warping")
    try:
        with Image.open(io.BytesIO(upload)) as image:
            labels = np.array(image)  # (Hc, Wc): the palette indices of a "P" image, the values of "L"/"1"
    except OSError as e:
        raise JobFailure("invalid_input", f"the uploaded mask cannot be decoded ({e}); upload a PNG") from e
    if labels.shape != tuple(canonical.shape[1:]):
        raise JobFailure(
            "invalid_input",
            f"the mask is {labels.shape[1]}x{labels.shape[0]}, the canonical image "
            f"{canonical.shape[2]}x{canonical.shape[1]}: upload a mask of its size",
        )
    masks = propagate_mask(torch.from_numpy(labels.astype(np.uint8)), fields).numpy()  # (T, H, W)
    run.stage("encoding")
    frames = media.to_uint8(render(canonical[None], fields[None])[0]).astype(np.float32)  # (T, H, W, 3)
    colours = palette(256).astype(np.float32)  # (256, 3)
    labelled = (masks > 0)[..., None]  # (T, H, W, 1)
    overlay = np.where(labelled, (1 - OVERLAY_ALPHA) * frames + OVERLAY_ALPHA * colours[masks], frames)
    out = io.BytesIO()
    np.savez_compressed(out, masks=masks)
    files = {
        "masks": out.getvalue(),
        "video": media.encode_video(
            media.from_uint8(overlay.round().astype(np.uint8)), int(run.job.params["fps"])
        ),
    }
    run.stage("uploading")
    return run.upload(files)


def do_decompose(run: JobRun) -> dict[str, Artifact]:
    """Fit a canonical image and fields to the uploaded video; progress and PSNR are reported as the fit goes."""
    job = run.job
    params = job.params
    video = run.input_blob("video")
    run.stage("fitting")
    try:
        frames, _ = read_clip(video, int(params["num_frames"]), int(params["resolution"]))  # (T, 3, H, W)
    except ValueError as e:
        raise JobFailure(
            "invalid_input", f"the uploaded video cannot be decoded: {e}; upload a complete mp4, webm or gif"
        ) from e
    T, _, H, W = frames.shape
    steps = int(params["steps"])
    figures: dict[str, Any] = {"frames": T, "width": W, "height": H, "steps": steps}

    def on_progress(step: int, psnr_db: float) -> None:
        figures.update(step=step, psnr_db=round(psnr_db, 2))
        run.report("fitting", FITTING_SHARE * step / steps, dict(figures))

    result = decompose(frames, DecomposeConfig(steps=steps), on_progress=on_progress)
    canonical, fields = result.canonical, result.fields  # (3, Hc, Wc), (T, H, W, 2)
    figures.update(canonical_width=canonical.shape[2], canonical_height=canonical.shape[1])
    run.report("encoding", FITTING_SHARE, dict(figures))
    meta = {
        "convention": media.FIELDS_CONVENTION,
        "layout": "fields: float32 (T, H, W, 2), relative to the canonical image (canonical_height x "
        "canonical_width), which is larger than the frames",
        "model": "decompose (optimisation, model/decompose.py)",
        "job_id": job.id,
        "kind": job.kind,
        "num_frames": T,
        "height": H,
        "width": W,
        "canonical_height": canonical.shape[1],
        "canonical_width": canonical.shape[2],
        "steps": steps,
        "psnr_db": round(result.psnr_db, 2),
    }
    files = {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, meta),
        "video": media.encode_video(render(canonical[None], fields[None])[0], int(params["fps"])),
    }
    run.report("uploading", (1 + FITTING_SHARE) / 2, dict(figures))
    return run.upload(files)


JOB_KINDS.update(
    {
        "track": (do_track, ("tracking", "encoding", "uploading")),
        "segment": (do_segment, ("warping", "encoding", "uploading")),
        "decompose": (do_decompose, ("fitting", "encoding", "uploading")),  # progress by JobRun.report
    }
)


@app.task(name="gendef.track", base=JobTask)
def track(job_id: str) -> None:
    run_task(job_id, "track")


@app.task(name="gendef.segment", base=JobTask)
def segment(job_id: str) -> None:
    run_task(job_id, "segment")


@app.task(name="gendef.decompose", base=JobTask)
def decompose_video(job_id: str) -> None:
    run_task(job_id, "decompose")
