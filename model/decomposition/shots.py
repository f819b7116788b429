"""Shots: where a clip cuts from one scene to another, and the frame ranges the cuts make."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CutConfig:
    thumbnail: int = 16  # frames are compared as thumbnails this many pixels square (area averaging)
    min_diff: float = 0.15  # a cut's mean absolute thumbnail difference (values in [-1, 1]) is at least this
    ratio: float = 2.5  # ... and at least this many times the median difference of the frames around it
    window: int = 8  # frames on each side whose differences make that median


def frame_differences(frames: torch.Tensor, thumbnail: int) -> torch.Tensor:
    """(T, 3, H, W) -> (T - 1,): mean absolute difference of each frame's thumbnail to the previous frame's."""
    small = F.adaptive_avg_pool2d(frames.float(), thumbnail)  # (T, 3, s, s)
    return (small[1:] - small[:-1]).abs().mean(dim=(1, 2, 3))


def find_cuts(frames: torch.Tensor, config: CutConfig = CutConfig()) -> list[int]:
    """The frames (T, 3, H, W) that start a new shot (never 0), in order: a frame whose change from the previous
    one is large (`min_diff`) and much larger (`ratio`) than the changes around it, so fast motion is no cut."""
    diffs = frame_differences(frames, config.thumbnail)  # (T - 1,)
    cuts = []
    for i, d in enumerate(diffs.tolist()):
        around = torch.cat([diffs[max(0, i - config.window) : i], diffs[i + 1 : i + 1 + config.window]])
        typical = float(around.median()) if around.numel() else 0.0
        if d >= config.min_diff and d >= config.ratio * typical:
            cuts.append(i + 1)
    return cuts


def shot_bounds(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[(start, end)] frame ranges (end exclusive) of the shots that cuts make of num_frames frames."""
    edges = [0, *cuts, num_frames]
    return list(zip(edges[:-1], edges[1:], strict=True))
