"""Video I/O: the project's one decoder and one encoder: PyAV (FFmpeg), reading through imageio.v3's pyav plugin.

Used by the API (uploads for /decompose), the worker (the decompose input, every mp4 artifact), training data
(model/data.py) and evaluation GIFs (model/evaluation/evaluate.py). No torch: frames are (T, H, W, 3) uint8 RGB arrays.

- ``read`` decodes a clip and checks every frame as it arrives against ``Limits`` (frame size, total decoded
  pixels, frame count, time), stopping at the first frame over one with VideoTooLarge: a stream header that
  announces a small size proves nothing, since VP8 and H.264 allow a later keyframe of another size. A frame of
  another size than frame 0 (within the limits) is VideoError: a clip keeps one frame size.
- ``probe`` reads the container's header and counts its packets without decoding (cheap checks of a whole upload).
- ``encode_mp4`` writes what browsers play: H.264 (libx264, CRF 18), yuv420p, faststart (moov atom before the
  media data), every frame given, at the given integer frame rate.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
from imageio.core.request import InitializationError
from PIL import Image

from core.errors import Invalid, TooLarge, UnsupportedFormat

CRF = 18  # x264 constant rate factor: visually lossless for these small videos, and small files
# x264's speed preset and threads: for 16 frames of 64 x 64, veryfast took half the time of the default (medium) for
# 2 % more bytes at the same CRF (superfast and ultrafast: no faster, files twice as large); one thread saved a
# quarter more (the same bytes), and leaves a worker's other cores to its other jobs. Macroblock-tree rate control
# off: with it, the same frames gave a different file in 46 of 600 encodes on a loaded CPU (one thread; the bitstream
# differed from the first frame on), without it 0 of 600 (and 0 with B-frames off, or x264's assembly off), so
# "the same job gives the same video" holds for the mp4 too
X264_OPTIONS = {"crf": str(CRF), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
DEFAULT_FPS = 25.0  # a stream that states no frame rate

# First bytes of the accepted upload containers -> (name, file extension, content type)
MP4 = ("mp4", "mp4", "video/mp4")
WEBM = ("webm", "webm", "video/webm")
GIF = ("gif", "gif", "image/gif")


class VideoError(Invalid):
    """Bytes that do not decode to video frames (not a video, truncated, corrupt)."""


class VideoTooLarge(TooLarge):
    """A video, or one of its frames, past a limit."""


@dataclass(frozen=True)
class Limits:
    """Bounds checked on each decoded frame (None: unbounded)."""

    max_pixels: int | None = None  # width x height of any one frame
    max_frames: int | None = None  # frames decoded
    max_duration_s: float | None = None  # time of a frame from the start (index / fps)
    max_total_pixels: int | None = None  # sum of width x height over the decoded frames


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns from an upload's header and packets."""

    container: str  # "mp4" | "webm" | "gif"
    extension: str
    content_type: str
    width: int
    height: int
    frames: int
    duration_s: float
    fps: float


def _scaled(width: int, height: int, long_side: int | None, short_side: int | None) -> tuple[int, int]:
    """The size that brings the long side to at most ``long_side`` and the short one to at most ``short_side``."""
    scale = min(
        1.0,
        long_side / max(width, height) if long_side else 1.0,
        short_side / min(width, height) if short_side else 1.0,
    )
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check(limits: Limits, index: int, frame: np.ndarray, fps: float, total: int) -> None:
    """Refuse frame ``index`` (0-based) of ``total`` pixels so far (itself included) if it passes a limit."""
    height, width = frame.shape[:2]
    where = f"frame {index}"
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise VideoTooLarge(
            f"{where} is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}: "
            "scale the video down"
        )
    if limits.max_frames is not None and index + 1 > limits.max_frames:
        raise VideoTooLarge(f"video has more than {limits.max_frames} frames: cut it")
    if limits.max_duration_s is not None and index / fps > limits.max_duration_s:
        raise VideoTooLarge(
            f"{where} is at {index / fps:.1f} s; the limit is {limits.max_duration_s} s: cut it"
        )
    if limits.max_total_pixels is not None and total > limits.max_total_pixels:
        raise VideoTooLarge(
            f"{where} brings the decoded pixels to {total}; the limit is {limits.max_total_pixels}: "
            "use fewer or smaller frames"
        )


def frames(
    source: bytes | Path,
    limits: Limits = Limits(),
    long_side: int | None = None,
    short_side: int | None = None,
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (frame (H, W, 3) uint8, the stream's fps) for each frame in order, each checked against ``limits``
    at its decoded size before anything else is done with it (and refused, VideoError, if its size is not frame
    0's: a clip keeps one size); then scaled down (never up, area averaging) so
    its long side is at most ``long_side`` and its short side at most ``short_side``. Raises VideoError when the bytes do not decode, VideoTooLarge at
    the first frame past a limit."""
    uri = source if isinstance(source, bytes) else str(source)
    try:
        with iio.imopen(uri, "r", plugin="pyav") as video:
            fps = float(video.metadata().get("fps") or 0.0) or DEFAULT_FPS
            total, first = 0, None
            for index, frame in enumerate(video.iter(format="rgb24")):  # (H, W, 3)
                total += frame.shape[0] * frame.shape[1]
                _check(limits, index, frame, fps, total)
                first = first or frame.shape[:2]
                if frame.shape[:2] != first:
                    raise VideoError(
                        f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is {first[1]}x{first[0]}: "
                        "the frame size changes mid-stream; re-encode the clip at one size"
                    )
                size = _scaled(frame.shape[1], frame.shape[0], long_side, short_side)
                if size != (frame.shape[1], frame.shape[0]):
                    frame = np.asarray(Image.fromarray(frame).resize(size, resample=Image.Resampling.BOX))
                yield frame, fps
    except (av.FFmpegError, InitializationError, OSError, IndexError) as e:
        raise VideoError(f"the video is truncated or corrupt: it cannot be decoded ({e})") from e


NO_FRAME = "the video has no decodable frame: is it truncated or corrupt?"


def read(
    source: bytes | Path,
    first: int | None = None,
    limits: Limits = Limits(),
    long_side: int | None = None,
    short_side: int | None = None,
) -> Clip:
    """The first ``first`` frames (all when None) of a video file or its bytes, checked and scaled as by
    ``frames``. VideoError when no frame decodes."""
    decoded = []
    for frame, fps in frames(source, limits, long_side, short_side):
        decoded.append(frame)
        if len(decoded) == first:
            return Clip(np.stack(decoded), fps)  # (T, H, W, 3)
    if not decoded:
        raise VideoError(NO_FRAME)
    return Clip(np.stack(decoded), fps)  # (T, H, W, 3)


def check(source: bytes | Path, first: int | None = None, limits: Limits = Limits()) -> int:
    """Decode and check the first ``first`` frames (all when None) as ``read`` does, keeping none (a thousand
    full-size frames would not fit in memory); how many there are. VideoError when no frame decodes."""
    count = 0
    for _ in frames(source, limits):
        count += 1
        if count == first:
            break
    if not count:
        raise VideoError(NO_FRAME)
    return count


def _container(data: bytes) -> tuple[str, str, str] | None:
    if data[4:8] == b"ftyp":  # ISO base media (mp4, mov): the first box is ftyp
        return MP4
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return WEBM
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    return None


def probe(data: bytes, limits: Limits) -> VideoInfo:
    """Check an uploaded mp4, webm or gif from its header and packets, before any frame is decoded: the format
    (UnsupportedFormat), the frame size in the header, the number of packets and their end time (VideoTooLarge),
    a stream that holds no frame (VideoError)."""
    kind = _container(data)
    if kind is None:
        raise UnsupportedFormat("video must be an mp4, webm or gif file (its first bytes are none of these)")
    name, extension, content_type = kind
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise VideoError(f"the {name} file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if limits.max_pixels is not None and width * height > limits.max_pixels:
                raise VideoTooLarge(
                    f"video frames are {width}x{height} = {width * height} pixels; the limit "
                    f"is {limits.max_pixels}: scale the video down"
                )
            if width * height == 0:
                raise VideoError(f"the {name} header gives no frame size; is the file complete?")
            count, end = 0, 0.0
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's flush packet
                    continue
                count += 1
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if limits.max_frames is not None and count > limits.max_frames:
                    raise VideoTooLarge(
                        f"video has more than {limits.max_frames} frames: cut it (only its first frames are used)"
                    )
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
    except av.FFmpegError as e:
        raise VideoError(
            f"the {name} video is truncated or corrupt ({e}); upload the complete file"
        ) from None
    if count == 0:
        raise VideoError(f"the {name} file holds no video frame")
    duration = max(end, count / fps if fps else 0.0)
    if limits.max_duration_s is not None and duration > limits.max_duration_s:
        raise VideoTooLarge(
            f"video lasts {duration:.1f} s; the limit is {limits.max_duration_s} s: cut it (only its first frames "
            "are used)"
        )
    return VideoInfo(name, extension, content_type, width, height, count, round(duration, 3), fps)


def _write(
    frames: np.ndarray, fps: int, suffix: str, codec: str, pixel_format: str, **container_options: str
) -> bytes:
    """Encode (T, H, W, 3) uint8 frames through a temporary file (mp4's faststart pass reopens it by name). PyAV
    directly: imageio's writer runs a full garbage collection as it closes, which in a worker (torch's many
    objects) took ~15 times as long as encoding a short clip."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {tuple(frames.shape)}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    _, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="gendef-video-") as tmp:
        path = os.path.join(tmp, f"video{suffix}")
        with av.open(path, "w", container_options=container_options) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.time_base = Fraction(1, fps)
            stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
            if codec == "libx264":
                stream.options = X264_OPTIONS
            for index, frame in enumerate(frames):
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                picture.pts = index
                container.mux(stream.encode(picture))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        with open(path, "rb") as f:
            return f.read()


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """(T, H, W, 3) uint8 -> H.264 mp4 bytes (yuv420p, CRF 18, +faststart), T frames at ``fps``.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row or column, so the
    video's top-left H x W pixels are the frames.
    """
    _, height, width, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # (T, H', W', 3)
    return _write(padded, fps, ".mp4", "libx264", "yuv420p", movflags="+faststart")


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    """(T, H, W, 3) uint8 -> a looping GIF (FFmpeg's gif encoder, 8-bit RGB palette)."""
    return _write(frames, fps, ".gif", "gif", "rgb8")
