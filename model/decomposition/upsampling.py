"""Warping a job's canonical image by its fields beyond their grid (what a /render job makes): more pixels per frame,
more frames per second.

- Space: the fields are upsampled (bilinear, after a one-pixel linear extrapolation on each side, so a field that
  is affine in the pixel coordinates, as a pan or a zoom is, stays exactly that at the larger size); the canonical
  image is upscaled, or replaced by a larger one painted by the user (the fields are in normalized units, so any
  canonical size works and the larger image's detail reaches the frames).
- Time: frame j of a video rendered `factor` times faster is the frame at time j / factor. Decomposed fields are
  interpolated linearly between the frames of one shot (never across a cut; past a shot's last frame it holds);
  generated fields come from the model's motion codes at those times (model.gendef.GenDeF.motion_at).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.warp import INTERPOLATION, warp


def upsample_fields(fields: torch.Tensor, scale: int) -> torch.Tensor:
    """(T, H, W, 2) -> (T, scale H, scale W, 2): the same sampling function, evaluated at the larger grid's
    pixel centres (exact for fields affine in the pixel coordinates)."""
    if scale == 1:
        return fields
    grid = fields.permute(0, 3, 1, 2)  # (T, 2, H, W)
    grid = torch.cat(
        [2 * grid[:, :, :1] - grid[:, :, 1:2], grid, 2 * grid[:, :, -1:] - grid[:, :, -2:-1]], dim=2
    )
    grid = torch.cat(
        [2 * grid[..., :1] - grid[..., 1:2], grid, 2 * grid[..., -1:] - grid[..., -2:-1]], dim=3
    )  # (T, 2, H + 2, W + 2)
    H, W = fields.shape[1:3]
    big = F.interpolate(grid, scale_factor=scale, mode="bilinear", align_corners=False)
    return big[:, :, scale : scale * (H + 1), scale : scale * (W + 1)].permute(0, 2, 3, 1).contiguous()


def upscale_image(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (3, scale H, scale W), bicubic, clamped to [-1, 1]."""
    if scale == 1:
        return image
    return F.interpolate(image[None], scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def frame_times(num_frames: int, factor: int) -> list[float]:
    """The times (in source frames) of a video `factor` times faster: j / factor for j < num_frames * factor."""
    return [j / factor for j in range(num_frames * factor)]


def interpolate_fields(fields: torch.Tensor, factor: int, shots: list[tuple[int, int]]) -> torch.Tensor:
    """(T, H, W, 2) -> (T factor, H, W, 2): frame j at time j / factor, linear between the two source frames of
    its shot around it (frames [start, end)); frame j factor is source frame j exactly."""
    out = []
    for start, end in shots:
        for j in range(start * factor, end * factor):
            left, alpha = divmod(j, factor)
            right = min(left + 1, end - 1)
            out.append(torch.lerp(fields[left], fields[right], alpha / factor) if alpha else fields[left])
    return torch.stack(out)


def warp_upsampled(
    canonical: torch.Tensor, fields: torch.Tensor, scale: int, interpolation: str = INTERPOLATION
) -> torch.Tensor:
    """Frames (T, 3, scale H, scale W) of a canonical image (3, Hc', Wc') of any size, by fields (T, H, W, 2)
    upsampled `scale` times, in [-1, 1] (the bicubic warp's overshoot clamped)."""
    return warp(canonical[None], upsample_fields(fields, scale)[None], interpolation)[0].clamp(-1, 1)
