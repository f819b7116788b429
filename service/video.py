"""Checks on uploaded videos (POST /decompose) before anything is queued: format, size, frames, duration.

Order matters for cost: the byte size first, then the file's signature, then the container's header (pixels per
frame, refused before any frame is decoded, so a "video bomb" costs nothing), then its packets (frames and
duration, counted without decoding), and last the first frame alone is decoded to refuse broken streams now
rather than in the worker. PyAV only: the API never imports torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

from service.settings import Settings
from service.uploads import UploadRejected

# First bytes of the accepted containers -> (name, file extension, content type)
MP4 = ("mp4", "mp4", "video/mp4")
WEBM = ("webm", "webm", "video/webm")
GIF = ("gif", "gif", "image/gif")


@dataclass(frozen=True)
class VideoInfo:
    container: str  # "mp4" | "webm" | "gif"
    extension: str
    content_type: str
    width: int
    height: int
    frames: int
    duration_s: float
    fps: float


def _container(data: bytes) -> tuple[str, str, str] | None:
    if data[4:8] == b"ftyp":  # ISO base media (mp4, mov): the first box is ftyp
        return MP4
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return WEBM
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    return None


def check_video(data: bytes, settings: Settings) -> VideoInfo:
    """Accept a complete mp4, webm or gif within the deployment's limits; raise UploadRejected (413, 415 or 422)
    with what to do otherwise."""
    if len(data) > settings.max_video_bytes:
        raise UploadRejected(
            413,
            f"video is larger than the limit of {settings.max_video_bytes} bytes: cut or "
            "compress it (only its first frames are used)",
        )
    kind = _container(data)
    if kind is None:
        raise UploadRejected(
            415, "video must be an mp4, webm or gif file (its first bytes are none of these)"
        )
    name, extension, content_type = kind
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise UploadRejected(422, f"the {name} file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > settings.max_video_pixels:
                raise UploadRejected(
                    413,
                    f"video frames are {width}x{height} = {width * height} pixels; the limit "
                    f"is {settings.max_video_pixels}: scale the video down",
                )
            if width * height == 0:
                raise UploadRejected(422, f"the {name} header gives no frame size; is the file complete?")
            frames, end = 0, 0.0
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's flush packet
                    continue
                frames += 1
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if frames > settings.max_video_frames:
                    raise UploadRejected(
                        413,
                        f"video has more than {settings.max_video_frames} frames: cut it "
                        "(only its first frames are used)",
                    )
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
        if frames == 0:
            raise UploadRejected(422, f"the {name} file holds no video frame")
        duration = max(end, frames / fps if fps else 0.0)
        if duration > settings.max_video_duration_s:
            raise UploadRejected(
                413,
                f"video lasts {duration:.1f} s; the limit is {settings.max_video_duration_s} s: "
                "cut it (only its first frames are used)",
            )
        with av.open(io.BytesIO(data), mode="r") as container:
            next(container.decode(container.streams.video[0]))
    except (av.FFmpegError, StopIteration) as e:
        reason = "no frame decodes" if isinstance(e, StopIteration) else str(e)
        raise UploadRejected(
            422, f"the {name} video is truncated or corrupt ({reason}); upload the complete file"
        ) from None
    return VideoInfo(name, extension, content_type, width, height, frames, round(duration, 3), fps)
