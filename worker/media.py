"""Tensors to artifact bytes and back: the worker's side of core/ (core/video.py, core/images.py and
core/artifacts.py hold the formats and work on uint8 / float32 arrays; this converts torch tensors to them).

- video: frames (T, 3, H, W) in [-1, 1] -> H.264 mp4 (core.video.encode_mp4)
- canonical: (3, H, W) in [-1, 1] -> lossless 8-bit RGB PNG
- deformation: fields (T, H, W, 2) <-> .npz (core.artifacts)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core import artifacts, images, video
from model import pixels as model_pixels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [-1, 1] -> (..., H, W, 3) uint8 (round to nearest, clipped)."""
    return model_pixels.to_uint8(images.detach().float().cpu()).movedim(-3, -1).numpy()  # (..., H, W, 3)


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]; the inverse of `to_uint8` on its outputs."""
    return torch.from_numpy(np.array(pixels)).float().div(127.5).sub(1.0).movedim(-1, -3)


def encode_video(frames: torch.Tensor, fps: int) -> bytes:
    """(T, 3, H, W) float in [-1, 1] -> H.264 mp4 bytes (core.video.encode_mp4)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    return video.encode_mp4(to_uint8(frames), fps)


def encode_png(canonical: torch.Tensor) -> bytes:
    """(3, H, W) float in [-1, 1] -> lossless 8-bit RGB PNG bytes."""
    if canonical.ndim != 3 or canonical.shape[0] != 3:
        raise ValueError(f"canonical must be (3, H, W), got {tuple(canonical.shape)}")
    return images.encode_png(to_uint8(canonical))


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, bool]:
    """PNG/JPEG bytes -> ((3, H, W) float32 in [-1, 1], resized): core.images.decode_image."""
    pixels, resized = images.decode_image(data, size)
    return from_uint8(pixels), resized  # (3, H, W)


def encode_fields(fields: torch.Tensor, meta: dict[str, Any], joins: torch.Tensor | None = None) -> bytes:
    """(T, H, W, 2) fields + meta (+ a decomposed clip's join fields (J, 2, H, W, 2)) -> deformation .npz bytes
    (core.artifacts)."""
    extra = None if joins is None else joins.detach().float().cpu().numpy()
    return artifacts.encode_fields(fields.detach().float().cpu().numpy(), meta, extra)


def decode_fields(data: bytes) -> tuple[torch.Tensor, dict[str, Any]]:
    """deformation .npz bytes -> ((T, H, W, 2) float32 fields, meta dict)."""
    fields, meta = artifacts.decode_fields(data)
    return torch.from_numpy(fields), meta  # (T, H, W, 2)


def decode_joins(data: bytes) -> torch.Tensor:
    """deformation .npz bytes -> a decomposed clip's join fields (J, 2, H, W, 2) (none: J = 0)."""
    return torch.from_numpy(artifacts.decode_joins(data))
