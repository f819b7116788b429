"""gendef.decompose: a canonical image and fields fitted to an uploaded video (model/decomposition/fit.py), reporting
progress and PSNR as the fit goes; its artifacts are those of a generate job."""

from __future__ import annotations

from typing import Any

import torch

from core import video
from core.artifacts import FIELDS_CONVENTION
from core.errors import DomainError
from core.jobs import Artifact
from core.settings import video_limits
from model.decomposition.fit import ATLAS_INTERPOLATION, DecomposeConfig, decompose_video
from model.decomposition.shots import find_cuts, shot_bounds
from model.warp import warp
from worker import media
from worker.execution import JobRun
from worker.runtime import JobFailure

FITTING_SHARE = 0.9  # of a decompose job's progress: the fit; encoding and uploading share the rest


def read_clip(data: bytes, num_frames: int, long_side: int, limits: video.Limits) -> torch.Tensor:
    """The first num_frames frames of a video, each checked against limits, scaled so the long side is at most
    long_side (area averaging): (T, 3, H, W) float32 in [-1, 1]."""
    return media.from_uint8(video.read(data, num_frames, limits, long_side=long_side).frames)


def do_decompose(run: JobRun) -> dict[str, Artifact]:
    """Split the uploaded video at its cuts and fit a canonical image and fields to each shot; progress and PSNR
    are reported per shot and step as the fit goes."""
    job = run.job
    params = job.params
    upload = run.input_blob("video")
    run.stage("fitting")
    try:
        limits = video_limits(run.rt.settings)
        frames = read_clip(
            upload, int(params["num_frames"]), int(params["resolution"]), limits
        )  # (T, 3, H, W)
    except DomainError as e:
        raise JobFailure("invalid_input", f"the uploaded video is refused: {e}") from e
    T, _, H, W = frames.shape
    steps = int(params["steps"])
    figures: dict[str, Any] = {"frames": T, "width": W, "height": H, "steps": steps}
    bounds = shot_bounds(T, find_cuts(frames))
    figures["shot_count"] = len(bounds)

    def on_progress(shot: int, shots: int, step: int, psnr_db: float) -> None:
        start, end = bounds[shot]
        figures.update(shot=shot, step=step, psnr_db=round(psnr_db, 2))
        run.report("fitting", FITTING_SHARE * (start + (end - start) * step / steps) / T, dict(figures))

    result = decompose_video(frames, DecomposeConfig(steps=steps), bounds, on_progress=on_progress)
    canonical, fields = result.canonical, result.fields  # (3, Hc, S Wc), (T, H, W, 2)
    tile_width = canonical.shape[2] // len(result.shots)
    shots = [
        {
            "start": s.start,
            "frames": s.end - s.start,
            "x": i * tile_width,
            "width": tile_width,
            "psnr_db": round(s.psnr_db, 2),
        }
        for i, s in enumerate(result.shots)
    ]
    figures.update(
        psnr_db=round(result.psnr_db, 2),
        shots=shots,
        canonical_width=canonical.shape[2],
        canonical_height=canonical.shape[1],
    )
    figures.pop("shot", None)
    run.report("encoding", FITTING_SHARE, dict(figures))
    meta = {
        "convention": FIELDS_CONVENTION,
        "interpolation": ATLAS_INTERPOLATION,
        "layout": "fields: float32 (T, H, W, 2), relative to the canonical image (canonical_height x "
        "canonical_width): the shots' canonical images side by side, each larger than the frames; shots[i] "
        "says which frames (start, frames) use the tile at x (width wide)",
        "model": "decompose (optimisation, model/decomposition/fit.py)",
        "job_id": job.id,
        "kind": job.kind,
        "num_frames": T,
        "height": H,
        "width": W,
        "canonical_height": canonical.shape[1],
        "canonical_width": canonical.shape[2],
        "shots": shots,
        "steps": steps,
        "psnr_db": round(result.psnr_db, 2),
    }
    files = {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, meta),
        "video": media.encode_video(
            warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0], int(params["fps"])
        ),
    }
    run.report("uploading", (1 + FITTING_SHARE) / 2, dict(figures))
    return run.upload(files)
