"""Checks on request bodies before anything is queued: body size (ASGI middleware) and uploaded videos (images:
core.images.check_image)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import video
from core.errors import TooLarge
from core.settings import Settings, video_limits


def check_video(data: bytes, num_frames: int, settings: Settings) -> video.VideoInfo:
    """Accept an uploaded mp4, webm or gif within the deployment's limits (domain errors that say what to do
    otherwise). Cheapest first: the byte size, then the container's header and packets (core.video.probe: frame
    size, frame count and duration without decoding), then the first num_frames frames, the ones the job uses,
    each checked as it is decoded (a later keyframe may be larger than the header says)."""
    if len(data) > settings.max_video_bytes:
        raise TooLarge(
            f"video is larger than the limit of {settings.max_video_bytes} bytes: cut or compress it (only its "
            "first frames are used)"
        )
    limits = video_limits(settings)
    info = video.probe(data, limits)
    video.read(data, num_frames, limits)
    return info


class BodySizeLimit:
    """Refuse request bodies past a size with 413: at once from Content-Length, else as soon as the streamed
    body passes the limit (an HTTPException raised from ``receive``, which FastAPI's body parsing lets through).

    ``limits`` maps a path to its limit; other paths get ``default``.
    """

    def __init__(self, app: ASGIApp, default: int, limits: dict[str, int]):
        self.app = app
        self.default = default
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        detail = f"request body is larger than the limit of {limit} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)
