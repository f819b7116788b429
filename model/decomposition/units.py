"""A clip decomposed as units: the one plan of which frames are fitted together, the fit of one unit, and the atlas
that joins the units' fits. The decompose job (worker/decomposition.py, worker/fanout.py: the units fitted by
Celery subtasks on any worker) and ``decompose_video`` (one process, the units one after another: the benchmark's
and the tests' way) both go through ``plan`` and ``assemble``, so the same clip gives the same units, tiles and
fields either way.

- ``plan``: the frames split at their cuts into shots (model/decomposition/shots.py), a shot longer than
  ``segment_frames`` into segments that share a few frames (model/decomposition/segments.py), and a shot whose camera
  goes so far that a segment's panorama would be larger than ``DecomposeConfig.max_area`` frames into segments
  where the panorama fills up (model/decomposition/panorama.split). Each unit says why it starts where it does
  (``Unit.reason``, API.md's ``shots[i].reason``).
- ``fit_unit``: one unit's frames -> its canonical image (a tile of the atlas), its fields and how well they render
  each frame; a pure function of the frames (model/decomposition/fit.py).
- ``assemble``: the tiles side by side in one canonical image, every frame's field pointing into one tile (where
  two segments share frames, the later one's from the frame where the two render most alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from model.decomposition import camera, panorama, segments
from model.decomposition.fit import ATLAS_INTERPOLATION, DecomposeConfig, decompose, fields_into_tile, lay_out
from model.decomposition.shots import find_cuts, shot_bounds
from model.warp import warp

# The most frames one unit fits: GENDEF_DECOMPOSE_SEGMENT_FRAMES's default (core/settings.py), what a decompose job
# fits in one Celery subtask.
SEGMENT_FRAMES = 64

# Why a unit (a tile of the atlas) starts where it does: API.md, Shots.
START = "start"  # the clip's first frame
CUT = "cut"  # a cut: the first frame of a new shot (shots.find_cuts)
LENGTH = "length"  # the shot goes on, but the previous segment already had segment_frames frames
PANORAMA = (
    "panorama"  # the shot goes on, but the camera went so far that the previous segment's panorama is full
)
REASONS = (START, CUT, LENGTH, PANORAMA)


@dataclass(frozen=True)
class Unit:
    """Frames [start, end) of the clip, fitted apart: segment `segment` of shot `shot` (0-based both), and why it
    starts there (one of REASONS)."""

    shot: int
    segment: int
    start: int
    end: int
    reason: str

    def describe(self) -> str:
        return f"shot {self.shot} segment {self.segment} (frames {self.start}-{self.end - 1})"


def plan(
    frames: torch.Tensor, segment_frames: int = SEGMENT_FRAMES, config: DecomposeConfig | None = None
) -> list[Unit]:
    """The units of a clip's frames (T, 3, H, W): its shots (cut where find_cuts finds cuts), each split into
    segments of at most segment_frames frames; a shot whose camera moves so far that a segment's panorama would be
    larger than config.max_area frames is split where the panorama fills up instead (panorama.split)."""
    config = config or DecomposeConfig()
    _, _, H, W = frames.shape
    units = []
    for shot, (start, end) in enumerate(shot_bounds(frames.shape[0], find_cuts(frames))):
        spans = segments.split(start, end, segment_frames)
        reasons = [LENGTH] * len(spans)
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
                # a segment ends where the panorama is full, or where it reached segment_frames frames first
                reasons = [LENGTH if b - a >= segment_frames else PANORAMA for a, b in spans]
        for segment, (a, b) in enumerate(spans):
            reason = (START if shot == 0 else CUT) if segment == 0 else reasons[segment - 1]
            units.append(Unit(shot, segment, a, b, reason))
    return units


@dataclass
class Fitted:
    canonical: torch.Tensor  # (3, Hc, Wc) in [-1, 1], 8-bit values
    fields: torch.Tensor  # (T, H, W, 2) relative to it
    errors: torch.Tensor  # (T,) mean squared error of each frame's render (values in [-1, 1])


def fit_unit(
    frames: torch.Tensor,
    config: DecomposeConfig,
    on_progress: Callable[[int, float], None] | None = None,
    report_every: int = 25,
) -> Fitted:
    """A canonical image and fields for one unit's frames (T, 3, H, W) in [-1, 1] (fit.decompose), and each frame's
    error; on_progress(step, psnr_db) every report_every steps (it may raise to stop)."""
    part = decompose(frames, config, on_progress, report_every=report_every)
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
    shots: list[dict[str, Any]]  # per tile: the frames it shows, why it starts there, where it is, their PSNR
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
                "reason": unit.reason,
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


def decompose_video(
    frames: torch.Tensor,
    config: DecomposeConfig | None = None,
    segment_frames: int = SEGMENT_FRAMES,
    on_progress: Callable[[int, int, int, float], None] | None = None,
    report_every: int = 25,
) -> Atlas:
    """A whole clip (T, 3, H, W) in [-1, 1] decomposed as a decompose job does it (``plan``, ``fit_unit`` of each
    unit, ``assemble``), its units fitted one after another in this process.

    on_progress(unit, units, step, psnr_db) as ``fit.decompose`` reports it, for each unit in turn (it may raise)."""
    config = config or DecomposeConfig()
    units = plan(frames, segment_frames, config)
    parts = []
    for index, unit in enumerate(units):
        report = None
        if on_progress is not None:

            def report(step: int, db: float, index: int = index) -> None:
                on_progress(index, len(units), step, db)

        parts.append(fit_unit(frames[unit.start : unit.end].float(), config, report, report_every))
    return assemble(units, parts)
