"""Images in [-1, 1] (the networks' range) as 8-bit pixels: the one conversion, and the strip of frames that
training's sample grids and the evaluation's pictures show."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] -> uint8 in [0, 255] of the same shape (rounded to nearest, clipped)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def frame_strip(videos: torch.Tensor, rows: int = 4, every: int = 2) -> np.ndarray:
    """videos (N, T, 3, H, W) in [-1, 1] -> uint8 (rows * H, cols * W, 3): one video per row, frames 0, every, ..."""
    v = videos[:rows, ::every].cpu()  # (rows, cols, 3, H, W)
    V, C, _, H, W = v.shape
    return to_uint8(v).permute(0, 3, 1, 4, 2).reshape(V * H, C * W, 3).numpy()
