"""gendef.decompose: a canonical image and fields fitted to an uploaded video (model/decomposition/), in three steps
that worker/fanout.py runs as Celery work on as many workers as there are:

- ``plan`` (model/decomposition/units.py, the one plan ``decompose_video`` also follows): the frames (decoded once)
  split at their cuts into shots, long shots and shots whose camera goes too far for one panorama into segments
  that share a few frames: one unit of work each.
- ``fit``: one unit's frames -> its canonical image (a tile of the atlas), its fields and how well they render each
  frame; a pure function of the frames, run by a fit subtask on any worker.
- ``assemble`` (units.py) and ``artifacts``: the tiles side by side in one canonical image, every frame's field
  pointing into one tile, and the job's artifacts, those of a generate job.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from core import video
from core.artifacts import FIELDS_CONVENTION
from core.jobs import JobRecord
from model.decomposition import segments
from model.decomposition.fit import ATLAS_INTERPOLATION, DecomposeConfig
from model.decomposition.units import Atlas, Fitted, fit_unit
from model.warp import warp
from worker import media

REPORT_EVERY = 10  # fit steps between progress reports (and cancel checks)
PAINTED = 1.5 / 127.5  # a canonical pixel that an edit changed by more than this (8-bit levels) is paint


def read_clip(data: bytes, num_frames: int, long_side: int, limits: video.Limits) -> torch.Tensor:
    """The first num_frames frames of a video, each checked against limits, scaled so the long side is at most
    long_side (area averaging): (T, 3, H, W) float32 in [-1, 1]."""
    return media.from_uint8(video.read(data, num_frames, limits, long_side=long_side).frames)


def fit(frames: torch.Tensor, steps: int, on_progress: Callable[[int, float], None]) -> Fitted:
    """A canonical image and fields for one unit's frames (T, 3, H, W) in [-1, 1] (model/decomposition/units.py);
    on_progress(step, psnr_db) every REPORT_EVERY steps (it may raise to stop)."""
    return fit_unit(frames, DecomposeConfig(steps=steps), on_progress, report_every=REPORT_EVERY)


def artifacts(job: JobRecord, atlas: Atlas) -> dict[str, bytes]:
    """canonical.png, deformation.npz (the fields (T, H, W, 2), their meta and the joins' fields) and video.mp4 of a
    decompose job."""
    canonical, fields = atlas.canonical, atlas.fields
    T, H, W, _ = fields.shape
    meta = {
        "convention": FIELDS_CONVENTION,
        "interpolation": ATLAS_INTERPOLATION,
        "layout": "fields: float32 (T, H, W, 2), relative to the canonical image (canonical_height x "
        "canonical_width): the canonical images of the shots (and of the segments of long shots) side by side, "
        "each larger than the frames; shots[i] says which frames (start, frames) use the tile at x (width wide) "
        "and why it starts there (reason: start, cut, length or panorama); "
        "joins[j]: the video switches from tile `earlier` to tile `later` at or just after frame `frame`, which "
        "both fitted: join_fields[j] holds its fields into the two",
        "model": "decompose (optimisation, model/decomposition/fit.py)",
        "job_id": job.id,
        "kind": job.kind,
        "num_frames": T,
        "height": H,
        "width": W,
        "canonical_height": canonical.shape[1],
        "canonical_width": canonical.shape[2],
        "shots": atlas.shots,
        "joins": atlas.joins,
        "steps": int(job.params["steps"]),
        "psnr_db": round(atlas.psnr_db, 2),
    }
    return {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, meta, atlas.join_fields),
        "video": media.encode_video(
            warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0], int(job.params["fps"])
        ),
    }


def carry_paint(
    before: torch.Tensor,
    after: torch.Tensor,
    tile: int,
    meta: dict[str, Any],
    join_fields: torch.Tensor,
) -> torch.Tensor:
    """A decomposed clip's canonical image `before` (3, Hc, Wc) painted on tile `tile` (`after`), with the paint
    carried on to the other segments of its shot: from tile to tile away from the painted one, through the frame
    both fitted where the video switches between them (meta["joins"], that frame's fields into the two tiles
    join_fields (J, 2, H, W, 2)). The paint is what `after` changed; each tile reached gets it laid over its own
    pixels where the frame sees it (model.decomposition.segments.carry). (3, Hc, Wc)."""
    out, shots = after.clone(), meta["shots"]
    paint = ((after - before).abs().amax(dim=0) > PAINTED).float()  # (Hc, Wc)
    x, width = shots[tile]["x"], shots[tile]["width"]
    paint[:, :x], paint[:, x + width :] = 0, 0
    done, todo = {tile}, [tile]
    while todo:
        here = todo.pop()
        x, width = shots[here]["x"], shots[here]["width"]
        own = torch.zeros_like(paint)
        own[:, x : x + width] = paint[:, x : x + width]
        for join, join_field in zip(meta.get("joins", []), join_fields, strict=True):
            ends = (join["earlier"], join["later"])
            if here not in ends or set(ends) <= done:
                continue
            there = ends[1] if here == ends[0] else ends[0]
            seen_by, lands_at = join_field if here == ends[0] else join_field.flip(0)
            a, b = shots[there]["x"], shots[there]["x"] + shots[there]["width"]
            colour, coverage = segments.carry(out, own, seen_by, lands_at, (a, b))
            out[:, :, a:b] = (out + coverage * (colour - out))[:, :, a:b]
            paint[:, a:b] = coverage[:, a:b]
            done.add(there)
            todo.append(there)
    return out


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
