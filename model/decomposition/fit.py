"""Decompose a real video into a canonical image and per-frame deformation fields by optimisation (CoDeF-style).

The video is explained as GenDeF explains its own: ``frames = grid_sample(canonical, fields)`` (model/warp.py).

- Canonical image: an explicit RGB image larger than the frame (a margin on each side) so content that moves in
  and out of view has a place; the frame sits in its centre at the start.
- Deformation: a multi-resolution grid over (x, y, t): offset grids of growing resolution, upsampled to the
  frame and summed, on top of the frame's place in the canonical image. Coarse levels are coarse in time too:
  the coarsest holds a grid every 8th frame, the next every 4th, then every 2nd, linearly interpolated between
  (motion is smooth over a few frames, and a keyframe is fitted from every frame near it); the finer levels hold
  one grid per frame. Finer levels switch on progressively (coarse-to-fine, Nerfies-style cosine annealing), so
  large and slow motions are found before details and fast ones.
- Loss: reconstruction (MSE) + image-gradient loss (CoDeF's) + the edge-aware smoothness of the offsets
  (model/training/losses.py), Adam on everything.

The returned fields follow API.md's convention relative to the returned canonical image, whatever its size.

A clip with cuts is split into shots first (``find_cuts``: a frame that differs from the one before far more than
its neighbours do); each shot gets its own canonical image and fields, and ``decompose_video`` lays the shots'
canonical images side by side in one image (the atlas) with each shot's fields pointing into its own tile, so
``grid_sample(atlas, fields)`` is still the whole video. Read bilinearly (``ATLAS_INTERPOLATION``, what the stored
meta says): clamped to a tile's pixel centres, a bilinear read stays in its tile, where bicubic's outer taps would
reach the next shot's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.decomposition.shots import find_cuts, shot_bounds
from model.fields import edge_aware_smoothness
from model.pixels import to_uint8
from model.warp import identity_grid, warp

ATLAS_INTERPOLATION = "bilinear"  # how decomposed fields are read (module doc)


@dataclass(frozen=True)
class DecomposeConfig:
    steps: int = 600  # Adam steps on all frames at once
    margin: float = 0.125  # canonical = frame grown by this fraction of its size on each side
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
    K, C, h, w = grid.shape
    if K == num_frames:
        return grid
    flat = grid.permute(1, 2, 3, 0).reshape(1, C * h * w, K)  # (1, C*h*w, K)
    flat = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)  # (1, C*h*w, T)
    return flat.reshape(C, h, w, num_frames).permute(3, 0, 1, 2)


def level_weights(step: int, steps: int, levels: int, anneal: float) -> list[float]:
    """Coarse-to-fine weights of the field levels at `step`: level 0 on from the start, level l fades in
    (cosine) as alpha = 1 + (levels - 1) * step / (anneal * steps) passes l."""
    alpha = 1 + (levels - 1) * min(1.0, step / max(1.0, anneal * steps))
    return [(1 - math.cos(math.pi * min(max(alpha - level, 0.0), 1.0))) / 2 for level in range(levels)]


def offsets_of(grids: list[torch.Tensor], weights: list[float], height: int, width: int) -> torch.Tensor:
    """Sum of the upsampled level grids: list of (K_l, 2, h_l, w_l) keyframe grids in canonical px, coarse to fine,
    the finest one per frame -> (T, H, W, 2) px. The levels are summed on the finest grid, which alone is upsampled
    to the frame (one full-size interpolation a step instead of one per level: the most expensive part of a step)."""
    num_frames, finest = grids[-1].shape[0], grids[-1].shape[2:]
    total = 0
    for grid, weight in zip(grids, weights, strict=True):
        if weight > 0:
            grid = in_time(grid, num_frames)
            if grid.shape[2:] != finest:
                grid = F.interpolate(grid, size=finest, mode="bilinear", align_corners=False)
            total = total + weight * grid
    total = F.interpolate(total, size=(height, width), mode="bilinear", align_corners=False)
    return total.permute(0, 2, 3, 1)  # (T, H, W, 2)


def fill_unseen(canonical: torch.Tensor, fields: torch.Tensor, seen_weight: float = 0.1) -> torch.Tensor:
    """canonical (3, Hc, Wc) with the pixels that no frame pixel reads through fields (T, H, W, 2) (their bilinear
    weights summed over all frames below seen_weight) replaced by the mean of the seen pixels nearest them
    (normalized 3x3 averaging, grown ring by ring). The fit never moves such pixels, so they hold whatever it
    started from (the middle frame, its edges stretched); a render at a finer grid (model/decomposition/upsampling.py) reads
    between the frames' sample points and would show that content. (The seams of renders where a fit stretches
    the canonical image come from pixels that other frames do use: this does not remove them.)"""
    probe = canonical.clone().requires_grad_(True)
    with torch.enable_grad():
        warp(probe[None], fields[None], ATLAS_INTERPOLATION).sum().backward()
    seen = (probe.grad[0] >= seen_weight).float()[
        None
    ]  # (1, Hc, Wc): the weight is the same in every channel
    if bool(seen.all()) or not bool(seen.any()):
        return canonical
    out, mask = canonical.clone(), seen
    while True:  # each round fills the unseen pixels next to filled ones
        num, den = (
            F.avg_pool2d(F.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]
            for x in (out * mask, mask)
        )
        new = (den > 0) & (mask == 0)  # (1, Hc, Wc)
        if not bool(new.any()):
            return out
        out = torch.where(new, num / den.clamp_min(1e-12), out)
        mask = torch.where(new, torch.ones_like(mask), mask)


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
    Hc, Wc = canonical_size(H, W, config.margin)
    to_units = frames.new_tensor([2 / Wc, 2 / Hc])  # canonical px -> grid_sample units
    base = base_fields(H, W, (Hc, Wc)).to(frames)  # (H, W, 2)

    # Start from the middle frame in the centre of the canonical image, its edges stretched into the margin.
    pad_h, pad_w = (Hc - H) // 2, (Wc - W) // 2
    start = F.pad(frames[T // 2][None], (pad_w, pad_w, pad_h, pad_h), mode="replicate")[0]  # (3, Hc, Wc)
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
    target_dx, target_dy = frames.diff(dim=3), frames.diff(dim=2)  # (T, 3, H, W-1), (T, 3, H-1, W)

    def fields_at(step: int) -> torch.Tensor:
        weights = level_weights(step, config.steps, len(grids), config.anneal)
        offsets = offsets_of(grids, weights, H, W)  # (T, H, W, 2) px
        return base + offsets * to_units, offsets  # (T, H, W, 2) units, px

    for step in range(config.steps):
        fraction = (1 + math.cos(math.pi * step / config.steps)) / 2  # cosine decay 1 -> 0
        for group, lr in zip(optimizer.param_groups, initial_lrs, strict=True):
            group["lr"] = lr * (config.lr_decay + (1 - config.lr_decay) * fraction)
        fields, offsets = fields_at(step)
        # Clamped as the stored 8-bit image will be, so values past [-1, 1] cannot help the fit.
        recon = warp(canonical.clamp(-1, 1)[None], fields[None], ATLAS_INTERPOLATION)[0]  # (T, 3, H, W)
        loss = (recon - frames).square().mean()
        loss = loss + config.grad_weight * (
            (recon.diff(dim=3) - target_dx).square().mean() + (recon.diff(dim=2) - target_dy).square().mean()
        )
        loss = loss + config.smooth_weight * edge_aware_smoothness(offsets, frames)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_progress is not None and (step + 1) % report_every == 0 and step + 1 < config.steps:
            on_progress(step + 1, psnr(recon.detach(), frames))

    with torch.no_grad():
        fields, _ = fields_at(config.steps)
    result = quantize(fill_unseen(canonical.detach().clamp(-1, 1), fields))
    with torch.no_grad():
        score = psnr(warp(result[None], fields[None], ATLAS_INTERPOLATION)[0], frames)
    if on_progress is not None:
        on_progress(config.steps, score)
    return Decomposition(canonical=result, fields=fields.contiguous(), psnr_db=score)


def fields_into_tile(fields: torch.Tensor, tile: int, tiles: int, tile_width: int) -> torch.Tensor:
    """Fields relative to one canonical image (tile_width wide) -> relative to `tiles` such images side by side,
    pointing into tile `tile`. x is clamped to the tile's pixel centres first: grid_sample's border padding of the
    tile alone is that clamp, so the atlas renders exactly what the tile did."""
    x = ((fields[..., 0] + 1) * tile_width - 1) / 2  # pixel coordinates in the tile
    x = x.clamp(0, tile_width - 1) + tile * tile_width
    u = (2 * x + 1) / (tiles * tile_width) - 1
    return torch.stack([u, fields[..., 1]], dim=-1)


@dataclass
class Shot:
    start: int  # first frame
    end: int  # one past the last frame
    psnr_db: float


@dataclass
class VideoDecomposition:
    canonical: torch.Tensor  # (3, Hc, S * Wc): the shots' canonical images side by side, in [-1, 1]
    fields: torch.Tensor  # (T, H, W, 2) relative to that image; frames of shot s point into its tile s
    shots: list[Shot]
    psnr_db: float  # of the whole video


def decompose_video(
    frames: torch.Tensor,
    config: DecomposeConfig = DecomposeConfig(),
    bounds: list[tuple[int, int]] | None = None,
    on_progress: Callable[[int, int, int, float], None] | None = None,
    report_every: int = 25,
) -> VideoDecomposition:
    """Split frames (T, 3, H, W) in [-1, 1] into shots (bounds: [(start, end)]; None: at the cuts find_cuts
    finds) and decompose each shot on its own.

    on_progress(shot, shots, step, psnr_db) as ``decompose`` reports it, for each shot in turn (it may raise)."""
    if bounds is None:
        bounds = shot_bounds(frames.shape[0], find_cuts(frames))
    canonicals, fields, shots = [], [], []
    for index, (start, end) in enumerate(bounds):
        report = None
        if on_progress is not None:

            def report(step: int, db: float, index: int = index) -> None:
                on_progress(index, len(bounds), step, db)

        part = decompose(frames[start:end], config, on_progress=report, report_every=report_every)
        canonicals.append(part.canonical)
        shots.append(Shot(start=start, end=end, psnr_db=part.psnr_db))
        width = part.canonical.shape[2]
        fields.append(fields_into_tile(part.fields, index, len(bounds), width))
    canonical, all_fields = torch.cat(canonicals, dim=2), torch.cat(fields)  # (3, Hc, S Wc), (T, H, W, 2)
    with torch.no_grad():
        score = psnr(warp(canonical[None], all_fields[None], ATLAS_INTERPOLATION)[0], frames.float())
    return VideoDecomposition(canonical=canonical, fields=all_fields, shots=shots, psnr_db=score)
