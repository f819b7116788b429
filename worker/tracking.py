"""gendef.track: where points of a job's canonical image (or of one of its frames) are in every frame; the video
with the tracks drawn. model/decomposition/tracking.py does the work."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.artifacts import interpolation_of
from core.jobs import Artifact
from model.decomposition.tracking import frame_points_to_canonical, track_points
from model.warp import warp
from worker import media
from worker.execution import JobRun
from worker.runtime import JobFailure


def palette(count: int) -> np.ndarray:
    """(count, 3) uint8 distinct saturated colours (hues spaced by the golden ratio)."""
    hues = (np.arange(count) * 0.618034) % 1.0
    return np.array(
        [[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.9, 1.0)] for h in hues], dtype=np.uint8
    )


def do_track(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    canonical, fields, meta = run.parent_fields()
    run.stage("tracking")
    Hc, Wc = canonical.shape[1:]
    points = torch.tensor(params["points"], dtype=torch.float32)  # (N, 2) px
    shot = run.shot(fields, meta, Wc)
    if shot is not None:  # points in the shot's canonical image, frames of that shot
        points[:, 0] += shot["x"]
        fields = fields[shot["start"] : shot["start"] + shot["frames"]]
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
    frames = media.to_uint8(warp(canonical[None], fields[None], interpolation_of(meta))[0])  # (T, H, W, 3)
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
