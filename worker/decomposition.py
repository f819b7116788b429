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
from model.decomposition import camera, panorama, segments
from model.decomposition.fit import ATLAS_INTERPOLATION, DecomposeConfig, decompose, fields_into_tile, lay_out
from model.decomposition.shots import find_cuts, shot_bounds
from model.warp import warp
from worker import media

REPORT_EVERY = 10  # fit steps between progress reports (and cancel checks)
PAINTED = 1.5 / 127.5  # a canonical pixel that an edit changed by more than this (8-bit levels) is paint


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


def plan(frames: torch.Tensor, segment_frames: int, config: DecomposeConfig | None = None) -> list[Unit]:
    """The units of work of a clip's frames (T, 3, H, W): its shots (cut where find_cuts finds cuts), each split
    into segments of at most segment_frames frames; a shot whose camera moves so far that a segment's panorama
    would be larger than config.max_area frames is split where the panorama fills up instead
    (model/decomposition/panorama.split)."""
    config = config or DecomposeConfig()
    _, _, H, W = frames.shape
    units = []
    for shot, (start, end) in enumerate(shot_bounds(frames.shape[0], find_cuts(frames))):
        spans = segments.split(start, end, segment_frames)
        if config.camera:
            maps = camera.estimate(frames[start:end], camera.CameraConfig(model=config.camera_model))
            areas = [
                panorama.area_ratio(
                    torch.linalg.inv(maps[(a + b) // 2 - start]) @ maps[a - start : b - start], H, W
                )
                for a, b in spans
            ]
            if max(areas) > config.max_area:
                spans = [
                    (start + a, start + b)
                    for a, b in panorama.split(maps, H, W, config.max_area, segment_frames)
                ]
        for segment, (a, b) in enumerate(spans):
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


@dataclass
class Atlas:
    """A decomposed clip: its units' tiles side by side and what says which frames show which tile."""

    canonical: torch.Tensor  # (3, Hc, S Wc)
    fields: torch.Tensor  # (T, H, W, 2) relative to it
    shots: list[dict[str, Any]]  # per tile: the frames it shows, where it is, their PSNR
    psnr_db: float  # of the whole clip
    # Where the video switches from one segment's tile to the next: [{"frame", "earlier", "later"}] (tile indices;
    # the frame both fitted, where the switch is or the one before), and that frame's fields into the two tiles
    # (J, 2, H, W, 2): what carries paint from tile to tile.
    joins: list[dict[str, int]]
    join_fields: torch.Tensor


def assemble(units: list[Unit], parts: list[Fitted]) -> Atlas:
    """The atlas of the units' fits: each frame shown by one tile, the later one of two segments from the shared
    frame where the switch changes the picture least."""
    canonical, columns = lay_out([p.canonical for p in parts])  # tiles of their own sizes, side by side
    atlas_hw = tuple(canonical.shape[1:])

    def into_atlas(index: int, fields: torch.Tensor) -> torch.Tensor:
        return fields_into_tile(fields, columns[index], tuple(parts[index].canonical.shape[1:]), atlas_hw)

    switches, joins, join_fields = [], [], []
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
            at = b.start + segments.switch_frame(earlier[0], later[0])
            switches.append(at)
            shared = min(at, a.end - 1)
            joins.append({"frame": shared, "earlier": i, "later": i + 1})
            into_a = into_atlas(i, part_a.fields[shared - a.start])
            into_b = into_atlas(i + 1, part_b.fields[shared - b.start])
            join_fields.append(torch.stack([into_a, into_b]))
    spans = segments.owned([(u.shot, u.start, u.end) for u in units], switches)
    fields, errors, shots = [], [], []
    for index, (unit, part, (start, end)) in enumerate(zip(units, parts, spans, strict=True)):
        shown = slice(start - unit.start, end - unit.start)
        fields.append(into_atlas(index, part.fields[shown]))
        errors.append(part.errors[shown])
        shots.append(
            {
                "shot": unit.shot,
                "segment": unit.segment,
                "start": start,
                "frames": end - start,
                "x": columns[index],
                "width": part.canonical.shape[2],
                "psnr_db": round(psnr_db(part.errors[shown]), 2),
            }
        )
    fields = torch.cat(fields)  # (T, H, W, 2)
    return Atlas(
        canonical=canonical,
        fields=fields,
        shots=shots,
        psnr_db=psnr_db(torch.cat(errors)),
        joins=joins,
        join_fields=torch.stack(join_fields) if join_fields else fields.new_zeros(0, 2, *fields.shape[1:]),
    )


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
        "each larger than the frames; shots[i] says which frames (start, frames) use the tile at x (width wide); "
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
