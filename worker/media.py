"""Artifact encoding and decoding: pure functions, bytes in and out, no storage, no model.

- video: frames (T, 3, H, W) in [-1, 1] -> H.264 mp4 (yuv420p, moov atom first so browsers start playing at once)
- canonical: (3, H, W) in [-1, 1] -> lossless 8-bit RGB PNG
- deformation: fields (T, H, W, 2) -> .npz with `fields` (float32) and `meta` (a JSON string), the layout of API.md
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

# Written into every deformation.npz so the file explains itself (API.md, docs/DESIGN.md).
FIELDS_CONVENTION = (
    "fields[t, y, x] = (u, v) is the point of the canonical image that pixel (x, y) of frame t shows, in "
    "torch.nn.functional.grid_sample's normalized coordinates: order (x, y), u = -1 is the left edge of the "
    "leftmost pixel and u = +1 the right edge of the rightmost (align_corners=False). "
    "frames = grid_sample(canonical, fields, mode='bilinear', padding_mode='border', align_corners=False)."
)

VIDEO_CONTENT_TYPE = "video/mp4"
PNG_CONTENT_TYPE = "image/png"
NPZ_CONTENT_TYPE = "application/octet-stream"

# x264 constant rate factor: 18 is visually lossless for these small videos and keeps files small.
VIDEO_CRF = 18


class MediaError(ValueError):
    """Bytes that cannot be decoded as the expected media."""


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [-1, 1] -> (..., H, W, 3) uint8 (round to nearest, clipped)."""
    scaled = ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scaled.movedim(-3, -1).numpy()  # (..., H, W, 3)


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]; the inverse of `to_uint8` on its outputs."""
    return torch.from_numpy(np.array(pixels)).float().div(127.5).sub(1.0).movedim(-1, -3)


def encode_video(frames: torch.Tensor, fps: int) -> bytes:
    """(T, 3, H, W) float in [-1, 1] -> H.264 mp4 bytes (yuv420p, High profile, +faststart).

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row or column, so the
    video's top-left H x W pixels are the frames.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    pixels = to_uint8(frames)  # (T, H, W, 3)
    _, height, width, _ = pixels.shape
    pixels = np.pad(pixels, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # (T, H', W', 3)
    # +faststart moves the moov atom before the media data in a second pass that reopens the output by name,
    # so the muxer writes a temporary file rather than a BytesIO.
    with tempfile.TemporaryDirectory(prefix="gendef-video-") as tmp:
        path = os.path.join(tmp, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = pixels.shape[2], pixels.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(VIDEO_CRF)}
            for image in pixels:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())  # flush the encoder
        with open(path, "rb") as f:
            return f.read()


def decode_video(data: bytes) -> tuple[np.ndarray, float]:
    """mp4 bytes -> ((T, H, W, 3) uint8 RGB frames, frames per second)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.FFmpegError, IndexError) as e:
        raise MediaError(f"not a decodable video: {e}") from e
    return np.stack(frames), fps  # (T, H, W, 3)


def encode_png(canonical: torch.Tensor) -> bytes:
    """(3, H, W) float in [-1, 1] -> lossless 8-bit RGB PNG bytes."""
    if canonical.ndim != 3 or canonical.shape[0] != 3:
        raise ValueError(f"canonical must be (3, H, W), got {tuple(canonical.shape)}")
    out = io.BytesIO()
    Image.fromarray(to_uint8(canonical)).save(out, format="PNG")
    return out.getvalue()


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, bool]:
    """PNG/JPEG bytes -> ((3, H, W) float32 in [-1, 1], resized).

    Any mode is converted to RGB (alpha dropped). With `size` = (H, W), an image of another size is resized to it
    (bilinear) and `resized` is True.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"not a decodable image: {e}") from e
    resized = size is not None and (rgb.height, rgb.width) != tuple(size)
    if resized:
        rgb = rgb.resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)
    return from_uint8(np.asarray(rgb)), resized  # (3, H, W)


def encode_fields(fields: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """(T, H, W, 2) fields + meta -> .npz bytes: `fields` float32 (T, H, W, 2), `meta` a JSON string."""
    if fields.ndim != 4 or fields.shape[-1] != 2:
        raise ValueError(f"fields must be (T, H, W, 2), got {tuple(fields.shape)}")
    out = io.BytesIO()
    np.savez(
        out, fields=fields.detach().float().cpu().numpy(), meta=np.array(json.dumps(meta, sort_keys=True))
    )
    return out.getvalue()


def decode_fields(data: bytes) -> tuple[torch.Tensor, dict[str, Any]]:
    """.npz bytes -> ((T, H, W, 2) float32 fields, meta dict)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            fields = torch.from_numpy(npz["fields"].astype(np.float32))  # (T, H, W, 2)
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise MediaError(f"not a deformation .npz: {e}") from e
    if fields.ndim != 4 or fields.shape[-1] != 2:
        raise MediaError(f"deformation fields must be (T, H, W, 2), got {tuple(fields.shape)}")
    return fields, meta
