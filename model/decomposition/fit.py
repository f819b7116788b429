"""Decompose a real video into a canonical image and per-frame deformation fields by optimisation (CoDeF-style).

The video is explained as GenDeF explains its own: ``frames = grid_sample(canonical, fields)`` (model/warp.py).

- Camera first (model/decomposition/camera.py): each frame's affine map to the shot's middle frame, found with
  OpenCV. The canonical image is the shot's panorama under it (model/decomposition/panorama.py: every frame fits,
  plus a margin on each side for what moves on its own), started from the median of the aligned frames, and each
  frame's field is the camera's map plus a residual. (``camera=False``: the method before it, kept for the
  benchmark's comparison: the frame in the centre of a canvas one margin larger, all motion left to the residual.)
- Residual: a multi-resolution grid over (x, y, t): offset grids of growing resolution, upsampled to the frame and
  summed. Coarse levels are coarse in time too: the coarsest holds a grid every 8th frame, the next every 4th, then
  every 2nd, linearly interpolated between (motion is smooth over a few frames, and a keyframe is fitted from every
  frame near it); the finer levels hold one grid per frame. Finer levels switch on progressively (coarse-to-fine,
  Nerfies-style cosine annealing), so large and slow motions are found before details and fast ones.
- Loss: reconstruction (MSE) + image-gradient loss (CoDeF's) + the edge-aware smoothness of the offsets, and the
  terms that keep the map a motion (read on the finest grid's points): a hinge on det J of the map frame pixel ->
  canonical pixel (no folds), the residual's distance from a local rotation where the frame has content (no
  stretching of objects), and CoDeF's flow guidance: pixels that the clip's own DIS flow carries from frame t to
  t + 1 (forward-backward checked, so occluded pixels are left out) land on the same canonical point. Without them
  the cheapest fit is a mosaic: pixels tiled from anywhere, which reconstructs the frames but is no scene to paint
  on. And, lightly, the residual's departure from an affine map of each frame where the camera explains the clip
  (its flow and the start picture agree with the camera's motion): a bend of the canonical image that no frame
  asks for (the frames render the same bent or not) is left out. Adam on everything.

The returned fields follow API.md's convention relative to the returned canonical image, whatever its size.

A clip is fitted in units (model/decomposition/units.py: its shots, split at the cuts, and segments of long shots
or of shots whose camera goes too far for one panorama): each unit gets its own canonical image and fields from
``decompose``, and the units' canonical images are laid side by side in one image (the atlas, ``lay_out``) with each
unit's fields pointing into its own tile (``fields_into_tile``), so ``grid_sample(atlas, fields)`` is still the whole
video. Read bilinearly (``ATLAS_INTERPOLATION``, what the stored meta says): clamped to a tile's pixel centres, a
bilinear read stays in its tile, where bicubic's outer taps would reach the next tile's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model.decomposition import camera, panorama
from model.fields import content_weights, edge_aware_smoothness
from model.pixels import to_uint8
from model.warp import identity_grid, warp

ATLAS_INTERPOLATION = "bilinear"  # how decomposed fields are read (module doc)


@dataclass(frozen=True)
class DecomposeConfig:
    steps: int = 300  # Adam steps on all frames at once (the API's default, service/limits.py)
    # The camera's motion first (model/decomposition/camera.py): the canonical image a panorama of the shot
    # (panorama.py), started from the median of the aligned frames, and the fields the camera's maps plus the
    # residual grids below. False: the frame in the middle of the canonical image, every motion left to the grids
    # and no fold, distortion or flow terms (the method before; benchmarks/decompose.py compares the two).
    camera: bool = True
    camera_model: str = "affine"  # camera.CameraConfig.model
    margin: float = 0.125  # room around the frames (the panorama, or the frame) of this fraction of a frame
    # A panorama of a shot is at most this many frames large (without its margin): a shot whose camera goes further
    # is split into segments (model/decomposition/units.plan), each its own tile.
    max_area: float = 4.0
    # Offset grid sizes along the frame's long side, coarse to fine (the short side scales with the aspect);
    # finer ones (doubling) are added while a cell still spans at least cell_pixels pixels: 128 at 256 px.
    field_levels: tuple[int, ...] = (4, 8, 16, 32, 64)
    cell_pixels: int = 2
    # Frames between the keyframes of each level, coarse to fine (levels past the end: every frame).
    time_strides: tuple[int, ...] = (8, 4, 2)
    anneal: float = 0.5  # fraction of the steps over which the finer field levels switch on
    lr_canonical: float = 0.03
    # In canonical pixels per step (Adam's step size) at a long side of 128 px, in proportion above it: motions
    # measured in pixels grow with the frames.
    lr_field: float = 0.02
    grad_weight: float = 0.1  # image-gradient loss
    smooth_weight: float = 0.002  # edge-aware smoothness of the offsets (in pixels)
    # With the camera: terms that keep the map a motion.
    fold_weight: float = 1.0  # hinge on det J of the map frame pixel -> canonical pixel ...
    fold_margin: float = 0.05  # ... below this (the camera's own det J is its zoom squared: about 1)
    # The residual's distance from a local rotation, where the frame has content. Small: it is what costs
    # reconstruction most where things move on their own (bigbuckbunny, 32 frames at 128 px, 300 steps: 0.05 ->
    # 27.3 dB, 0.01 -> 30.4, 0.003 -> 31.5; painted dots' overlap 0.85, 0.83, 0.83, dot-like 93, 93, 87 %); the
    # flow term below keeps the motion.
    distortion_weight: float = 0.003
    flow_weight: float = (
        0.02  # the clip's flow: pixels it carries to the next frame keep their canonical point
    )
    # The residual's departure from an affine map (least squares, per frame) where the camera explains the clip
    # (camera_agreement): there the residual may correct the camera's map, not bend the scene. In canonical px^2.
    # Without it the fit bends the canonical image a little where nothing asks it to (the same frames either way).
    # 300 steps, one thread (benchmarks/decompose.py --edits' clips): coffee filmed by a camera, 48 frames at
    # 256 x 192, 0 -> 0.001 -> 0.01 -> 0.1: 0.655 -> 0.329 -> 0.157 -> 0.083 px from affine, 40.8 -> 41.0 -> 41.0
    # -> 40.8 dB, the photo 31.0 -> 33.2 -> 34.2 -> 35.0 dB; bigbuckbunny frames 0-49 (a job's first unit of 96
    # frames): 29.6 -> 29.4 -> 28.8 -> 27.7 dB (real footage has parallax and disocclusion, which the camera's
    # agreement does not tell from a bend), dot-like 76, 84, 76, 81 %.
    affine_weight: float = 0.001
    lr_decay: float = 0.1  # the learning rates fall to this fraction by the last step (cosine)


@dataclass
class Decomposition:
    canonical: torch.Tensor  # (3, Hc, Wc) in [-1, 1]
    fields: torch.Tensor  # (T, H, W, 2) grid_sample units relative to the canonical image
    psnr_db: float  # reconstruction PSNR of grid_sample(8-bit canonical, fields) vs the frames


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a - b).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] values to the 256 levels an 8-bit PNG stores."""
    return to_uint8(image).float() / 127.5 - 1


def canonical_size(height: int, width: int, margin: float) -> tuple[int, int]:
    """(Hc, Wc): the frame grown by `margin` of its size on each side."""
    return height + 2 * round(margin * height), width + 2 * round(margin * width)


def base_fields(height: int, width: int, canonical_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W, 2): every frame pixel shows the same pixel of the frame placed in the canonical image's centre.

    Frame pixel x sits at canonical pixel x + (Wc - W) / 2, i.e. u = (2x + 1 + Wc - W) / Wc - 1 = u_frame W / Wc.
    """
    Hc, Wc = canonical_hw
    return identity_grid(height, width) * torch.tensor([width / Wc, height / Hc])  # (H, W, 2)


def level_shape(size: int, height: int, width: int) -> tuple[int, int]:
    """Grid (h, w) of a level with `size` cells along the long side, at most one cell per pixel."""
    scale = size / max(height, width)
    return max(2, min(height, round(height * scale))), max(2, min(width, round(width * scale)))


def levels_for(config: DecomposeConfig, long_side: int) -> tuple[int, ...]:
    """The field levels of frames `long_side` pixels long: config.field_levels, then doubling while a cell spans
    at least config.cell_pixels pixels."""
    levels = list(config.field_levels)
    while 2 * levels[-1] * config.cell_pixels <= long_side:
        levels.append(2 * levels[-1])
    return tuple(levels)


def keyframes(num_frames: int, stride: int) -> int:
    """How many keyframes a level with this stride holds for num_frames frames: the first and last frame and one
    every `stride` frames between (about; they are spread evenly)."""
    return 1 if num_frames == 1 else math.ceil((num_frames - 1) / stride) + 1


def in_time(grid: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A level's keyframe grids (K, 2, h, w) -> one per frame (num_frames, 2, h, w), linear in time between
    keyframes (the first and last keyframes are the first and last frames)."""
    K = grid.shape[0]
    if K == num_frames:
        return grid
    return (time_weights(K, num_frames).to(grid) @ grid.reshape(K, -1)).reshape(num_frames, *grid.shape[1:])


@functools.lru_cache(maxsize=64)
def time_weights(keys: int, num_frames: int) -> torch.Tensor:
    """(num_frames, keys): how much each keyframe of a level with `keys` keyframes weighs in each frame (linear
    between the two keyframes around it; the first and last keyframes are the first and last frames)."""
    indicators = torch.eye(keys, dtype=torch.float64)[None]  # (1, K, K): keyframe k's values in channel k
    return F.interpolate(indicators, size=num_frames, mode="linear", align_corners=True)[0].T.float()


def level_weights(step: int, steps: int, levels: int, anneal: float) -> list[float]:
    """Coarse-to-fine weights of the field levels at `step`: level 0 on from the start, level l fades in
    (cosine) as alpha = 1 + (levels - 1) * step / (anneal * steps) passes l."""
    alpha = 1 + (levels - 1) * min(1.0, step / max(1.0, anneal * steps))
    return [(1 - math.cos(math.pi * min(max(alpha - level, 0.0), 1.0))) / 2 for level in range(levels)]


def offsets_of(
    grids: list[torch.Tensor],
    weights: list[float],
    height: int,
    width: int,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the upsampled level grids: list of (K_l, 2, h_l, w_l) keyframe grids in canonical px, coarse to fine,
    the finest one per frame -> (T, H, W, 2) px (times scale (2,), when given: in the fields' units), and the sum on
    the finest grid (T, h, w, 2) px. The levels are summed on the finest grid, which alone is upsampled to the frame
    (one full-size interpolation a step instead of one per level: the most expensive part of a step), scaled before
    it (the same: bilinear upsampling is linear), a quarter of the pixels; the terms that keep the map a motion read
    that grid."""
    num_frames, finest = grids[-1].shape[0], grids[-1].shape[2:]
    # Each level upsampled to the finest grid while it is keyframes (fewer than frames: space and time are apart,
    # so the order of the two linear interpolations does not matter), the levels of one stride summed, and each sum
    # brought to every frame once.
    by_keys: dict[int, torch.Tensor] = {}
    for grid, weight in zip(grids, weights, strict=True):
        if weight > 0:
            if grid.shape[2:] != finest:
                grid = F.interpolate(grid, size=finest, mode="bilinear", align_corners=False)
            keys = grid.shape[0]
            by_keys[keys] = weight * grid + by_keys[keys] if keys in by_keys else weight * grid
    total = sum(in_time(keys, num_frames) for keys in by_keys.values())  # (T, 2, h, w)
    scaled = total if scale is None else total * scale.view(1, 2, 1, 1)
    full = F.interpolate(scaled, size=(height, width), mode="bilinear", align_corners=False)
    return full.permute(0, 2, 3, 1), total.permute(0, 2, 3, 1)  # (T, H, W, 2), (T, h, w, 2)


def fill_unseen(canonical: torch.Tensor, fields: torch.Tensor, seen_weight: float = 0.1) -> torch.Tensor:
    """canonical (3, Hc, Wc) with the pixels that no frame pixel reads through fields (T, H, W, 2) (their bilinear
    weights summed over all frames below seen_weight) replaced by the nearest seen pixel (panorama.fill). The fit
    never moves such pixels, so they hold whatever it started from; a render at a finer grid
    (model/decomposition/upsampling.py) reads
    between the frames' sample points and would show that content. (The seams of renders where a fit stretches
    the canonical image come from pixels that other frames do use: this does not remove them.)"""
    probe = canonical.clone().requires_grad_(True)
    with torch.enable_grad():
        warp(probe[None], fields[None], ATLAS_INTERPOLATION).sum().backward()
    seen = (probe.grad[0] >= seen_weight).float()[
        None
    ]  # (1, Hc, Wc): the weight is the same in every channel
    return panorama.fill(canonical, seen)


class _Reconstruction(torch.autograd.Function):
    """reconstruction_loss with its gradient written out: a few passes over the frames forward and back, where
    autograd's composition of the same terms (squares, differences, means and their backwards, each a full-size
    tensor) made about twenty, the most expensive part of a step after grid_sample."""

    @staticmethod
    def forward(ctx, recon: torch.Tensor, frames: torch.Tensor, grad_weight: float) -> torch.Tensor:
        error = recon - frames  # (..., H, W)
        dx = error[..., :, 1:] - error[..., :, :-1]  # = recon's horizontal differences - the frames'
        dy = error[..., 1:, :] - error[..., :-1, :]
        ctx.save_for_backward(error, dx, dy)
        ctx.grad_weight = grad_weight
        return mean_square(error) + grad_weight * (mean_square(dx) + mean_square(dy))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        error, dx, dy = ctx.saved_tensors
        scale = 2 * float(grad)  # d(mean of squares) / dx = 2 x / n, times the loss's own gradient (a scalar)
        out = error * (scale / error.numel())
        kx, ky = scale * ctx.grad_weight / dx.numel(), scale * ctx.grad_weight / dy.numel()
        out[..., :, 1:].add_(dx, alpha=kx)  # each difference pulls on both of its pixels
        out[..., :, :-1].sub_(dx, alpha=kx)
        out[..., 1:, :].add_(dy, alpha=ky)
        out[..., :-1, :].sub_(dy, alpha=ky)
        return out, None, None


def mean_square(x: torch.Tensor) -> torch.Tensor:
    """The mean of x squared (a contiguous tensor), in one pass: a dot product of x with itself."""
    flat = x.reshape(-1)
    return flat.dot(flat) / flat.numel()


def reconstruction_loss(recon: torch.Tensor, frames: torch.Tensor, grad_weight: float) -> torch.Tensor:
    """The fit's reconstruction terms, renders recon (..., H, W) against frames (the same shape, contiguous): the
    mean squared error, plus grad_weight times the mean squared errors of the horizontal and the vertical
    differences of neighbouring pixels (CoDeF's image-gradient loss: edges at their places). Scalar;
    differentiable in recon."""
    return _Reconstruction.apply(recon, frames, grad_weight)


def frame_groups(num_frames: int) -> int:
    """Into how many groups of whole frames ``render`` splits a fit's frames: grid_sample computes the items of its
    batch in parallel, one per thread, so as many as torch has threads, where they divide the frames evenly."""
    return max(g for g in range(1, min(torch.get_num_threads(), num_frames) + 1) if num_frames % g == 0)


def grouped(frames: torch.Tensor, groups: int) -> torch.Tensor:
    """Frames (T, C, H, W) in render's layout: (groups, C, T / groups, H, W), contiguous."""
    T, C, H, W = frames.shape
    return frames.reshape(groups, T // groups, C, H, W).transpose(1, 2).contiguous()


def render(canonical: torch.Tensor, fields: torch.Tensor, groups: int) -> torch.Tensor:
    """grid_sample(canonical, fields) (ATLAS_INTERPOLATION, border padding, as ``warp`` reads it) of every frame,
    canonical (C, Hc, Wc) and fields (T, H, W, 2), in `groups` items of one batch: (groups, C, T / groups, H, W)
    (``grouped``'s layout). Each item renders whole frames, its fields' rows stacked, from one view of the canonical
    image: warp's batch of one item per frame reads a copy of the canonical image per frame and, backwards,
    makes a gradient of that size (T x C x Hc x Wc, zeroed and summed each step), the most expensive part of a
    step after the render itself."""
    T, H, W, _ = fields.shape
    out = F.grid_sample(
        canonical[None].expand(groups, -1, -1, -1),
        fields.reshape(groups, T // groups * H, W, 2),
        mode=ATLAS_INTERPOLATION,
        padding_mode="border",
        align_corners=False,
    )  # (groups, C, T / groups * H, W)
    return out.view(groups, canonical.shape[0], T // groups, H, W)


def cell_centres(cells: int, size: int) -> torch.Tensor:
    """(cells,) the frame pixel coordinates of the centres of a grid's cells, `cells` across `size` pixels (where
    bilinear upsampling with align_corners=False puts the grid's values)."""
    return (torch.arange(cells, dtype=torch.float64) + 0.5) * size / cells - 0.5


def guide_flow(frames: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's own motion as correspondences: DIS flow (OpenCV) from each frame (T, 3, H, W) to the next, read
    at the points (xs[j], ys[i]) (frame pixels), where the flow back from the next frame returns within half a
    pixel (plus 5 % of the motion) and lands inside the frame; occluded and uncertain points are left out.
    Returns the flow (T-1, h, w, 2) in frame pixels and where it holds (T-1, h, w) bool."""
    images = camera.grey(frames)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    H, W = images[0].shape
    gy, gx = np.meshgrid(ys.numpy().astype(np.float32), xs.numpy().astype(np.float32), indexing="ij")
    flows, valid = [], []
    for a, b in zip(images[:-1], images[1:], strict=True):
        forward, backward = dis.calc(a, b, None), dis.calc(b, a, None)  # (H, W, 2)
        f = cv2.remap(forward, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # (h, w, 2)
        x2, y2 = gx + f[..., 0], gy + f[..., 1]
        back = cv2.remap(backward, x2, y2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = np.hypot(*np.moveaxis(f + back, -1, 0))
        ok = (error < 0.5 + 0.05 * np.hypot(*np.moveaxis(f, -1, 0))) & (x2 >= 0) & (x2 <= W - 1)
        flows.append(f)
        valid.append(ok & (y2 >= 0) & (y2 <= H - 1))
    return torch.from_numpy(np.stack(flows)), torch.from_numpy(np.stack(valid))


def flow_mismatch(
    points: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    frame_hw: tuple[int, int],
) -> torch.Tensor:
    """How far apart (canonical px, Charbonnier) the canonical points of pixels that the clip's flow carries from
    one frame to the next are: points (T, h, w, 2) in canonical px, of the frame points (xs[j], ys[i]) (a grid's
    cell centres, cell_centres); flow (T-1, h, w, 2) and valid (T-1, h, w) from guide_flow at those points. The next
    frame's canonical point is read between the grid's points (bilinear, as the grid is upsampled). Scalar."""
    H, W = frame_hw
    gy, gx = torch.meshgrid(ys.to(points), xs.to(points), indexing="ij")
    to = torch.stack([gx, gy], dim=-1) + flow.to(points)  # (T-1, h, w, 2) frame pixels of the next frame
    grid = (2 * to + 1) / to.new_tensor([W, H]) - 1  # align_corners=False units: the same for any grid size
    there = F.grid_sample(
        points[1:].permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False
    ).permute(0, 2, 3, 1)  # (T-1, h, w, 2)
    distance = ((points[:-1] - there).square().sum(dim=-1) + 0.01).sqrt()  # (T-1, h, w)
    mask = valid.to(points)
    return (distance * mask).sum() / mask.sum().clamp_min(1.0)


def camera_agreement(
    frames: torch.Tensor,
    pano: panorama.Panorama,
    start: torch.Tensor,
    flow: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    flow_px: float = 1.0,
    colour: float = 0.1,
) -> torch.Tensor:
    """How much the camera's motion alone explains each frame point (xs[j], ys[i]): (T, h, w) in [0, 1], the product
    of two soft agreements: the clip's DIS flow to the next frame (flow, guide_flow's) against the camera's (within
    about flow_px pixels), and the frame's colour (area-averaged to the grid) against the start picture `start`
    (3, Hc, Wc; the median of the aligned frames, where passing objects vanish) at the camera's point (within about
    `colour` in [-1, 1] units). The last frame takes the agreement of the flow into it."""
    T, _, H, W = frames.shape
    h, w = len(ys), len(xs)
    points = panorama.points_at(pano, xs, ys)  # (T, h, w, 2) canonical px
    # the camera's motion of each frame point to the next frame: next frame's map inverted after this frame's
    step = torch.linalg.inv(pano.maps[1:]) @ pano.maps[:-1]  # (T-1, 3, 3)
    gy, gx = torch.meshgrid(ys.double(), xs.double(), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)  # (h, w, 2)
    moved = torch.einsum("tij,hwj->thwi", step, torch.cat([grid, torch.ones_like(grid[..., :1])], -1))
    moved = moved[..., :2] / moved[..., 2:]
    miss = (flow.double() - (moved - grid)).norm(dim=-1)  # (T-1, h, w)
    by_flow = torch.exp(-(miss / flow_px).square())
    by_flow = torch.cat([by_flow, by_flow[-1:]]) if T > 1 else torch.ones(1, h, w, dtype=torch.float64)
    Hc, Wc = start.shape[1:]
    units = (2 * points + 1) / points.new_tensor([Wc, Hc]) - 1
    expected = F.grid_sample(
        start[None].expand(T, -1, -1, -1).double(),
        units,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (T, 3, h, w)
    small = F.interpolate(frames.double(), size=(h, w), mode="area")
    by_colour = torch.exp(-((small - expected).abs().mean(dim=1) / colour).square())
    return (by_flow * by_colour).to(frames.dtype)


def affine_departure(
    residual: torch.Tensor, weights: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
) -> torch.Tensor:
    """Weighted mean squared distance (px^2) of residual (T, h, w, 2) at the frame points (xs[j], ys[i]) from the
    affine map of those points that fits it best with weights (T, h, w) (weighted least squares, per frame).
    Scalar."""
    T, h, w, _ = residual.shape
    gy, gx = torch.meshgrid(ys.to(residual), xs.to(residual), indexing="ij")
    scale = max(h, w) * 1.0
    design = torch.stack(
        [gx.flatten() / scale, gy.flatten() / scale, torch.ones(h * w).to(residual)], 1
    )  # (N, 3)
    wt = weights.reshape(T, h * w)
    r = residual.reshape(T, h * w, 2)
    weighted = design.T[None] * wt[:, None, :]  # (T, 3, N)
    gram = weighted @ design + 1e-6 * torch.eye(3).to(residual)  # (T, 3, 3)
    solution = torch.linalg.solve(gram, weighted @ r)  # (T, 3, 2)
    departure = (r - design @ solution).square().sum(dim=-1)  # (T, N)
    return (wt * departure).sum() / wt.sum().clamp_min(1e-6)


def map_determinant(points: torch.Tensor) -> torch.Tensor:
    """det J of the map frame pixel -> canonical pixel, points (T, H, W, 2) in canonical px (forward differences)
    -> (T, H-1, W-1)."""
    dx = points[:, :-1, 1:] - points[:, :-1, :-1]
    dy = points[:, 1:, :-1] - points[:, :-1, :-1]
    return dx[..., 0] * dy[..., 1] - dy[..., 0] * dx[..., 1]


def residual_distortion(
    residual: torch.Tensor, weights: torch.Tensor, spacing: tuple[float, float]
) -> torch.Tensor:
    """How far the residual's map p -> p + residual(p) is locally from a rotation, ||J^T J - I||_F, averaged with
    weights (where the frame has content: a moving object may not stretch, the flat background between objects
    may): residual (T, h, w, 2) in pixels on a grid whose points are spacing (x, y) frame pixels apart, weights
    (T, h - 1, w - 1). Scalar."""
    dx = (residual[:, :-1, 1:] - residual[:, :-1, :-1]) / spacing[
        0
    ]  # (T, h-1, w-1, 2): J's 1st column - (1, 0)
    dy = (residual[:, 1:, :-1] - residual[:, :-1, :-1]) / spacing[1]
    a = (1 + dx[..., 0]).square() + dx[..., 1].square() - 1
    d = dy[..., 0].square() + (1 + dy[..., 1]).square() - 1
    b = (1 + dx[..., 0]) * dy[..., 0] + dx[..., 1] * (1 + dy[..., 1])
    per_point = (a.square() + d.square() + 2 * b.square() + 1e-12).sqrt()
    return (weights * per_point).sum() / weights.sum().clamp_min(1e-6)


def decompose(
    frames: torch.Tensor,
    config: DecomposeConfig = DecomposeConfig(),
    on_progress: Callable[[int, float], None] | None = None,
    report_every: int = 25,
) -> Decomposition:
    """Fit a canonical image and fields to frames (T, 3, H, W) in [-1, 1].

    on_progress(step, psnr_db) is called every `report_every` steps and after the last (it may raise to stop).
    Deterministic for the same input on the same device (the fit starts from the frames, never from noise).
    """
    frames = frames.float()
    T, _, H, W = frames.shape
    if config.camera:
        maps = camera.estimate(frames, camera.CameraConfig(model=config.camera_model))
        pano = panorama.layout(maps, H, W, config.margin)
        Hc, Wc = pano.height, pano.width
        base = panorama.base_fields(pano, H, W).to(frames)  # (T, H, W, 2)
        start = panorama.median(frames, pano)  # (3, Hc, Wc)
    else:
        Hc, Wc = canonical_size(H, W, config.margin)
        base = base_fields(H, W, (Hc, Wc)).to(frames)  # (H, W, 2)
        # The middle frame in the centre of the canonical image, its edges stretched into the margin.
        pad_h, pad_w = (Hc - H) // 2, (Wc - W) // 2
        start = F.pad(frames[T // 2][None], (pad_w, pad_w, pad_h, pad_h), mode="replicate")[0]  # (3, Hc, Wc)
    to_units = frames.new_tensor([2 / Wc, 2 / Hc])  # canonical px -> grid_sample units
    canonical = start.clone().requires_grad_(True)
    sizes = levels_for(config, max(H, W))
    # the coarse levels' strides, then every frame (always at the finest level)
    strides = [*config.time_strides[: len(sizes) - 1], *[1] * len(sizes)][: len(sizes)]
    grids = [
        frames.new_zeros(keyframes(T, stride), 2, *level_shape(size, H, W)).requires_grad_(True)
        for size, stride in zip(sizes, strides, strict=True)
    ]
    optimizer = torch.optim.Adam(
        [
            {"params": [canonical], "lr": config.lr_canonical},
            {"params": grids, "lr": config.lr_field * max(1.0, max(H, W) / 128)},
        ]
    )
    initial_lrs = [group["lr"] for group in optimizer.param_groups]
    groups = frame_groups(T)
    target = grouped(frames, groups)  # the frames in render's layout
    if config.camera:  # the terms that keep the map a motion read it at the finest grid's points
        h, w = grids[-1].shape[2:]
        xs, ys = cell_centres(w, W), cell_centres(h, H)
        spacing = (W / w, H / h)  # frame pixels between the grid's points
        base_points = panorama.points_at(pano, xs, ys).to(frames)  # (T, h, w, 2) canonical px
        small_frames = F.interpolate(frames, size=(h, w), mode="area")  # (T, 3, h, w)
        content = content_weights(small_frames)  # (T, h - 1, w - 1)
        flow, valid = guide_flow(frames, xs, ys)  # (T-1, h, w, 2), (T-1, h, w)
        if config.affine_weight > 0:
            explained = camera_agreement(frames, pano, start, flow, xs, ys)  # (T, h, w)

    def fields_at(step: int) -> torch.Tensor:
        weights = level_weights(step, config.steps, len(grids), config.anneal)
        offsets, finest = offsets_of(grids, weights, H, W, to_units)  # (T, H, W, 2) units, (T, h, w, 2) px
        return base + offsets, offsets, finest

    for step in range(config.steps):
        fraction = (1 + math.cos(math.pi * step / config.steps)) / 2  # cosine decay 1 -> 0
        for group, lr in zip(optimizer.param_groups, initial_lrs, strict=True):
            group["lr"] = lr * (config.lr_decay + (1 - config.lr_decay) * fraction)
        fields, offsets, finest = fields_at(step)
        # Clamped as the stored 8-bit image will be, so values past [-1, 1] cannot help the fit.
        recon = render(canonical.clamp(-1, 1), fields, groups)  # (groups, 3, T / groups, H, W)
        loss = reconstruction_loss(recon, target, config.grad_weight)
        if not config.camera:
            loss = loss + config.smooth_weight * edge_aware_smoothness(offsets / to_units, frames)
        else:
            loss = loss + config.smooth_weight * edge_aware_smoothness(finest, small_frames)
            points = base_points + finest  # (T, h, w, 2) canonical px
            det = map_determinant(points) / (spacing[0] * spacing[1])  # per frame pixel
            loss = loss + config.fold_weight * F.relu(config.fold_margin - det).mean()
            loss = loss + config.distortion_weight * residual_distortion(finest, content, spacing)
            loss = loss + config.flow_weight * flow_mismatch(points, flow, valid, xs, ys, (H, W))
            if config.affine_weight > 0:
                loss = loss + config.affine_weight * affine_departure(finest, explained, xs, ys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_progress is not None and (step + 1) % report_every == 0 and step + 1 < config.steps:
            on_progress(step + 1, psnr(recon.detach(), target))

    with torch.no_grad():
        fields, _, _ = fields_at(config.steps)
    result = quantize(fill_unseen(canonical.detach().clamp(-1, 1), fields))
    with torch.no_grad():
        score = psnr(warp(result[None], fields[None], ATLAS_INTERPOLATION)[0], frames)
    if on_progress is not None:
        on_progress(config.steps, score)
    return Decomposition(canonical=result, fields=fields.contiguous(), psnr_db=score)


def fields_into_tile(
    fields: torch.Tensor, x0: int, tile_hw: tuple[int, int], atlas_hw: tuple[int, int]
) -> torch.Tensor:
    """Fields relative to one canonical image (a tile, tile_hw) -> relative to the atlas (atlas_hw) that holds it
    at column x0, centred in height (``lay_out``). The point is clamped to the tile's pixel centres first:
    grid_sample's border padding of the tile alone is that clamp, so the atlas renders exactly what the tile did."""
    (h, w), (Ha, Wa) = tile_hw, atlas_hw
    top = (Ha - h) // 2
    x = ((fields[..., 0] + 1) * w - 1) / 2  # pixel coordinates in the tile
    y = ((fields[..., 1] + 1) * h - 1) / 2
    x, y = x.clamp(0, w - 1) + x0, y.clamp(0, h - 1) + top
    return torch.stack([(2 * x + 1) / Wa - 1, (2 * y + 1) / Ha - 1], dim=-1)


def lay_out(tiles: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """Canonical images (3, h_i, w_i) side by side in one atlas (3, max h, sum w), each centred in height with its
    top and bottom rows repeated into the rows it lacks (no frame reads them: fields_into_tile clamps into the
    tile); returns the atlas and each tile's first column."""
    height = max(t.shape[1] for t in tiles)
    columns, padded, x = [], [], 0
    for tile in tiles:
        top = (height - tile.shape[1]) // 2
        bottom = height - tile.shape[1] - top
        padded.append(F.pad(tile[None], (0, 0, top, bottom), mode="replicate")[0] if top or bottom else tile)
        columns.append(x)
        x += tile.shape[2]
    return torch.cat(padded, dim=2), columns
