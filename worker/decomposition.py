"""gendef.decompose: a canonical image and fields fitted to an uploaded video (model/decomposition/), in three steps
that worker/fanout.py runs as Celery work on as many workers as there are:

- ``plan``: the frames (decoded once) split at their cuts into shots, and long shots into segments that share a
  few frames (model/decomposition/segments.py): one unit of work each.
- ``fit``: one unit's frames -> its canonical image (a tile of the atlas), its fields and how well they render each
  frame; a pure function of the frames, run by a fit subtask on any worker.
- ``assemble`` and ``artifacts``: the tiles side by side in one canonical image, every frame's field pointing into
  one tile (where two segments share frames, the later one's from the frame where the two render most alike), and
  the job's artifacts, those of a generate job.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core import video
from core.artifacts import FIELDS_CONVENTION
from core.jobs import JobRecord
from model.decomposition import segments
from model.decomposition.fit import ATLAS_INTERPOLATION, DecomposeConfig, decompose, fields_into_tile
from model.decomposition.shots import find_cuts, shot_bounds
from model.warp import warp
from worker import media

REPORT_EVERY = 10  # fit steps between progress reports (and cancel checks)


def read_clip(data: bytes, num_frames: int, long_side: int, limits: video.Limits) -> torch.Tensor:
    """The first num_frames frames of a video, each checked against limits, scaled so the long side is at most
    long_side (area averaging): (T, 3, H, W) float32 in [-1, 1]."""
    return media.from_uint8(video.read(data, num_frames, limits, long_side=long_side).frames)


@dataclass(frozen=True)
class Unit:
    """Frames [start, end) of the clip, fitted apart: segment `segment` of shot `shot` (0-based both)."""

    shot: int
    segment: int
    start: int
    end: int

    def describe(self) -> str:
        return f"shot {self.shot} segment {self.segment} (frames {self.start}-{self.end - 1})"


def plan(frames: torch.Tensor, segment_frames: int) -> list[Unit]:
    """The units of work of a clip's frames (T, 3, H, W): its shots (cut where find_cuts finds cuts), each split
    into segments of at most segment_frames frames."""
    units = []
    for shot, (start, end) in enumerate(shot_bounds(frames.shape[0], find_cuts(frames))):
        for segment, (a, b) in enumerate(segments.split(start, end, segment_frames)):
            units.append(Unit(shot, segment, a, b))
    return units


@dataclass
class Fitted:
    canonical: torch.Tensor  # (3, Hc, Wc) in [-1, 1], 8-bit values
    fields: torch.Tensor  # (T, H, W, 2) relative to it
    errors: torch.Tensor  # (T,) mean squared error of each frame's render (values in [-1, 1])


def fit(frames: torch.Tensor, steps: int, on_progress: Callable[[int, float], None]) -> Fitted:
    """A canonical image and fields for one unit's frames (T, 3, H, W) in [-1, 1] (model/decomposition/fit.py);
    on_progress(step, psnr_db) every REPORT_EVERY steps (it may raise to stop)."""
    part = decompose(frames, DecomposeConfig(steps=steps), on_progress, report_every=REPORT_EVERY)
    with torch.no_grad():
        render = warp(part.canonical[None], part.fields[None], ATLAS_INTERPOLATION)[0]  # (T, 3, H, W)
    return Fitted(part.canonical, part.fields, (render - frames).square().mean(dim=(1, 2, 3)))


def psnr_db(errors: torch.Tensor) -> float:
    """PSNR of frames whose mean squared errors are `errors` (T,) (values in [-1, 1], peak-to-peak 2)."""
    mse = float(errors.mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def assemble(
    units: list[Unit], parts: list[Fitted]
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]], float]:
    """The atlas (3, Hc, S Wc) of the units' tiles side by side, the clip's fields (T, H, W, 2) relative to it,
    `shots` (for each tile the frames it shows, where it is, and their PSNR) and the PSNR of the whole clip."""
    switches = []
    for i in range(len(units) - 1):
        (a, part_a), (b, part_b) = (units[i], parts[i]), (units[i + 1], parts[i + 1])
        if a.shot == b.shot:  # segments of one shot: both fitted frames [b.start, a.end)
            with torch.no_grad():  # a's renders of frames b.start - 1 .. a.end - 1, b's of b.start .. a.end
                earlier = warp(
                    part_a.canonical[None], part_a.fields[None, b.start - 1 - a.start :], ATLAS_INTERPOLATION
                )
                later = warp(
                    part_b.canonical[None], part_b.fields[None, : a.end + 1 - b.start], ATLAS_INTERPOLATION
                )
            switches.append(b.start + segments.switch_frame(earlier[0], later[0]))
    spans = segments.owned([(u.shot, u.start, u.end) for u in units], switches)
    width = parts[0].canonical.shape[2]  # every tile is the frame plus the same margins
    fields, errors, shots = [], [], []
    for index, (unit, part, (start, end)) in enumerate(zip(units, parts, spans, strict=True)):
        shown = slice(start - unit.start, end - unit.start)
        fields.append(fields_into_tile(part.fields[shown], index, len(parts), width))
        errors.append(part.errors[shown])
        shots.append(
            {
                "shot": unit.shot,
                "segment": unit.segment,
                "start": start,
                "frames": end - start,
                "x": index * width,
                "width": width,
                "psnr_db": round(psnr_db(part.errors[shown]), 2),
            }
        )
    atlas = torch.cat([p.canonical for p in parts], dim=2)
    return atlas, torch.cat(fields), shots, psnr_db(torch.cat(errors))


def artifacts(
    job: JobRecord, canonical: torch.Tensor, fields: torch.Tensor, shots: list[dict[str, Any]], psnr: float
) -> dict[str, bytes]:
    """canonical.png, deformation.npz (fields (T, H, W, 2) and their meta) and video.mp4 of a decompose job."""
    T, H, W, _ = fields.shape
    meta = {
        "convention": FIELDS_CONVENTION,
        "interpolation": ATLAS_INTERPOLATION,
        "layout": "fields: float32 (T, H, W, 2), relative to the canonical image (canonical_height x "
        "canonical_width): the canonical images of the shots (and of the segments of long shots) side by side, "
        "each larger than the frames; shots[i] says which frames (start, frames) use the tile at x (width wide)",
        "model": "decompose (optimisation, model/decomposition/fit.py)",
        "job_id": job.id,
        "kind": job.kind,
        "num_frames": T,
        "height": H,
        "width": W,
        "canonical_height": canonical.shape[1],
        "canonical_width": canonical.shape[2],
        "shots": shots,
        "steps": int(job.params["steps"]),
        "psnr_db": round(psnr, 2),
    }
    return {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, meta),
        "video": media.encode_video(
            warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0], int(job.params["fps"])
        ),
    }


# What the fit subtasks read and write under the job's storage prefix: 8-bit frames (deflated), and a fit.


def encode_frames(frames: torch.Tensor) -> bytes:
    """(T, 3, H, W) in [-1, 1] with 8-bit values (decoded video) -> .npz bytes: uint8 (T, H, W, 3), deflated."""
    out = io.BytesIO()
    np.savez_compressed(out, frames=media.to_uint8(frames))
    return out.getvalue()


def decode_frames(data: bytes) -> torch.Tensor:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return media.from_uint8(npz["frames"])  # (T, 3, H, W)


def encode_fitted(part: Fitted) -> bytes:
    out = io.BytesIO()
    np.savez(out, **{name: getattr(part, name).numpy() for name in ("canonical", "fields", "errors")})
    return out.getvalue()


def decode_fitted(data: bytes) -> Fitted:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return Fitted(*(torch.from_numpy(npz[name]) for name in ("canonical", "fields", "errors")))
