"""Checks of delivered artifacts against the coordinate convention, shared by the worker and e2e tests."""

import io
from fractions import Fraction

import av
import numpy as np
import torch
import torch.nn.functional as F

from core import video
from worker import media

# Decoded video vs the expected frames after the same 4:2:0 chroma subsampling: what remains is x264's loss.
MIN_PSNR_DB = 30.0


def decode_video(data: bytes) -> tuple[np.ndarray, float]:
    """mp4 bytes -> ((T, H, W, 3) uint8 RGB frames, frames per second), through the project's decoder."""
    clip = video.read(data)
    return clip.frames, clip.fps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def warp(canonical: torch.Tensor, fields: torch.Tensor, interpolation: str) -> torch.Tensor:
    """The convention of API.md, written here independently of model/: (3, H, W), (T, H, W, 2) read with the mode
    their meta names -> (T, 3, H, W), clamped to [-1, 1]."""
    num_frames = fields.shape[0]
    return F.grid_sample(
        canonical[None].expand(num_frames, -1, -1, -1),
        fields,
        mode=interpolation,
        padding_mode="border",
        align_corners=False,
    ).clamp(-1, 1)  # (T, 3, H, W)


def yuv420(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> the same after a round trip through yuv420p (chroma at half resolution)."""
    return np.stack(
        [
            av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            .reformat(format="yuv420p")
            .to_ndarray(format="rgb24")
            for f in frames
        ]
    )


def video_psnr(mp4: bytes, canonical_png: bytes, deformation_npz: bytes) -> tuple[float, float]:
    """(PSNR of the decoded video vs grid_sample(canonical, fields), PSNR vs the unwarped canonical repeated):
    the first must be high and the second clearly lower, or the test would not notice a missing warp."""
    decoded, _ = decode_video(mp4)  # (T, H, W, 3)
    canonical, _ = media.decode_image(canonical_png)  # (3, H, W)
    fields, meta = media.decode_fields(deformation_npz)  # (T, H, W, 2)
    expected = yuv420(media.to_uint8(warp(canonical, fields, meta["interpolation"])))  # (T, H, W, 3)
    still = yuv420(media.to_uint8(canonical[None].expand(fields.shape[0], -1, -1, -1)))
    assert decoded.shape == expected.shape, (decoded.shape, expected.shape)
    return psnr(decoded, expected), psnr(decoded, still)


def vp8_webm(runs: list[tuple[int, int]], fps: int = 8) -> bytes:
    """A VP8 WebM of ``runs`` of (side, frames) square frames. Its header gives the first run's size; each later
    run starts with a keyframe of its own size (VP8 allows it mid-stream): the packets of one encoder per run are
    muxed into the first one's stream."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = runs[0][0], runs[0][0], "yuv420p"
        pts = 0
        for run, (side, count) in enumerate(runs):
            codec = stream.codec_context
            if run:
                codec = av.CodecContext.create("libvpx", "w")
                codec.width, codec.height, codec.pix_fmt, codec.time_base = (
                    side,
                    side,
                    "yuv420p",
                    Fraction(1, fps),
                )
            for i in range(count):
                frame = av.VideoFrame.from_ndarray(
                    np.full((side, side, 3), 40 * i % 256, np.uint8), format="rgb24"
                )
                frame.pts, frame.time_base = pts, Fraction(1, fps)
                pts += 1
                for packet in codec.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in codec.encode(None):
                packet.stream = stream
                container.mux(packet)
    return out.getvalue()
