"""A shot's canonical image as a panorama: big enough to hold every frame under the camera's motion
(model/decomposition/camera.py), at the scale of the shot's middle frame, and a first picture of the scene in it.

- ``layout``: the bounding box of all frames' corners mapped into the middle frame, grown by a margin on each side
  (room for what moves beyond the camera's motion): the canonical image's size, and each frame's map into it.
- ``base_fields``: every frame's field under the camera's motion alone (model/warp.py's convention).
- ``median``: the start of the fit, the per-pixel median of the frames aligned into it, so passing objects vanish;
  pixels no frame sees take the nearest seen ones.
- ``split``: a shot whose panorama would be more than ``max_area`` frames large, as segments that each fit (the
  same segments as long shots get, sharing model/decomposition/segments.OVERLAP frames).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from model.decomposition.camera import apply
from model.decomposition.segments import OVERLAP


@dataclass
class Panorama:
    height: int  # Hc
    width: int  # Wc
    maps: torch.Tensor  # (T, 3, 3) float64: each frame's pixels -> canonical pixels (centres at integers)


def corners(height: int, width: int) -> torch.Tensor:
    """(4, 2) the frame's corner points in pixel coordinates (pixel edges: -0.5 .. size - 0.5)."""
    return torch.tensor(
        [[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]],
        dtype=torch.float64,
    )


def extent(maps: torch.Tensor, height: int, width: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the bounding box of all frames' corners under maps (T, 3, 3)."""
    points = apply(maps, corners(height, width)).reshape(-1, 2)  # (T * 4, 2)
    low, high = points.min(dim=0).values, points.max(dim=0).values
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def area_ratio(maps: torch.Tensor, height: int, width: int) -> float:
    """The area of the frames' bounding box under maps (T, 3, 3), in frames."""
    x0, y0, x1, y1 = extent(maps, height, width)
    return (x1 - x0) * (y1 - y0) / (height * width)


def layout(maps: torch.Tensor, height: int, width: int, margin: float) -> Panorama:
    """The canonical image of frames (height x width) under maps (T, 3, 3) to the reference frame: the frames'
    bounding box grown by `margin` of the frame's size on each side."""
    x0, y0, x1, y1 = extent(maps, height, width)
    mx, my = margin * width, margin * height
    Wc, Hc = math.ceil(x1 - x0 + 2 * mx), math.ceil(y1 - y0 + 2 * my)
    # centre the box in the canvas: reference pixel (x, y) -> canvas (x + ox, y + oy)
    ox, oy = (Wc - (x1 - x0)) / 2 - x0 - 0.5, (Hc - (y1 - y0)) / 2 - y0 - 0.5
    shift = torch.tensor([[1.0, 0, ox], [0, 1.0, oy], [0, 0, 1.0]], dtype=torch.float64)
    return Panorama(height=Hc, width=Wc, maps=shift @ maps)


def points_at(panorama: Panorama, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(T, h, w, 2) float64: the canonical pixel each frame's point (xs[j], ys[i]) (frame pixels) shows under the
    camera's motion alone."""
    gy, gx = torch.meshgrid(ys.double(), xs.double(), indexing="ij")
    return apply(panorama.maps, torch.stack([gx, gy], dim=-1))


def base_fields(panorama: Panorama, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 2) float32: each frame's field under the camera's motion alone, relative to the panorama."""
    px = points_at(panorama, torch.arange(width), torch.arange(height))  # (T, H, W, 2) canonical pixels
    size = torch.tensor([panorama.width, panorama.height], dtype=torch.float64)
    return ((2 * px + 1) / size - 1).float()


def fill(image: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """image (C, H, W) with the pixels where seen (1, H, W) is 0 replaced by the nearest seen pixel's value
    (Euclidean distance, OpenCV's distance transform with labels)."""
    if bool(seen.all()) or not bool(seen.any()):
        return image
    unseen = (~seen[0].bool()).numpy().astype(np.uint8)  # (H, W): the transform measures to the nearest 0
    _, labels = cv2.distanceTransformWithLabels(unseen, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(unseen == 0)  # the seen pixels, in the order the labels count them (1, 2, ...)
    order = np.argsort(labels[ys, xs], kind="stable")
    index = torch.from_numpy((ys[order] * unseen.shape[1] + xs[order])[labels - 1].astype(np.int64))  # (H, W)
    flat = image.reshape(image.shape[0], -1)
    return flat[:, index.flatten()].reshape(image.shape)


def median(frames: torch.Tensor, panorama: Panorama, max_frames: int = 24) -> torch.Tensor:
    """The panorama's first picture: the per-pixel median of frames (T, 3, H, W) in [-1, 1] aligned into it (at
    most max_frames of them, evenly spread), unseen pixels filled from the nearest seen. (3, Hc, Wc)."""
    T = frames.shape[0]
    count = min(T, max_frames)
    picks = sorted({round(i * (T - 1) / max(1, count - 1)) for i in range(count)})
    size = (panorama.width, panorama.height)
    stack = np.full((len(picks), panorama.height, panorama.width, 3), np.nan, dtype=np.float32)
    for i, t in enumerate(picks):
        image = np.ascontiguousarray(frames[t].float().permute(1, 2, 0).numpy())  # (H, W, 3)
        m = panorama.maps[t].numpy()
        warped = cv2.warpPerspective(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = cv2.warpPerspective(np.ones(image.shape[:2], np.float32), m, size, flags=cv2.INTER_LINEAR)
        stack[i][inside > 0.999] = warped[inside > 0.999]
    seen = ~np.isnan(stack[..., 0]).all(axis=0)  # (Hc, Wc)
    with warnings.catch_warnings():  # pixels no frame sees: all NaN, 0 here, then filled
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nan_to_num(np.nanmedian(stack, axis=0))  # (Hc, Wc, 3)
    image = torch.from_numpy(out).permute(2, 0, 1).contiguous()
    return fill(image, torch.from_numpy(seen)[None])


def split(
    maps: torch.Tensor, height: int, width: int, max_area: float, max_frames: int
) -> list[tuple[int, int]]:
    """Frames [0, T) of a shot whose frames map to its middle frame by maps (T, 3, 3), as segments [(start, end)]
    sharing OVERLAP frames, each at most max_frames long and with a panorama (measured at its own middle frame's
    scale) of at most max_area frames, grown greedily; a segment is never shorter than 3 * OVERLAP frames (so each
    shows frames of its own), even when the camera moves faster than the cap allows."""
    T = maps.shape[0]
    shortest = 3 * OVERLAP

    def fits(start: int, end: int) -> bool:
        middle = (start + end) // 2
        local = torch.linalg.inv(maps[middle]) @ maps[start:end]
        return area_ratio(local, height, width) <= max_area

    if T <= max_frames and fits(0, T):
        return [(0, T)]
    out, start = [], 0
    while True:
        end = min(T, start + shortest)
        while end < T and end - start < max_frames and fits(start, end + 1):
            end += 1
        out.append((start, end))
        if end == T:
            return out
        # the next starts OVERLAP frames back, or earlier when fewer than `shortest` frames would be left to it
        start = min(end - OVERLAP, T - shortest)
