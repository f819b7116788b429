"""Checks on request bodies before anything is queued: body size (ASGI middleware) and uploaded videos (images:
core.images.check_image).

A route's body limit is declared by the route itself: each file field of an upload route is an ``upload_file``,
which names the setting that bounds the file's bytes, and ``body_limits`` reads those declarations from the app's
OpenAPI document. A route without files takes a JSON document (service.limits.JSON_BODY_LIMIT); a file field
declared without a limit stops the app from being created, so a new upload route cannot be left out."""

from __future__ import annotations

from typing import Any

from fastapi import File
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import video
from core.errors import TooLarge
from core.settings import Settings, video_limits
from service.limits import JSON_BODY_LIMIT, MULTIPART_OVERHEAD

LIMIT_KEY = "x-gendef-limit"  # a file field's OpenAPI schema: the GENDEF_ setting that bounds its bytes


def upload_file(setting: str, description: str) -> Any:
    """``File(...)`` of an upload route's file field, declaring the setting (a field of core.settings.Settings)
    that bounds the file's bytes; the route's body limit is read from it (``body_limits``)."""
    if setting not in Settings.model_fields:
        raise ValueError(f"{setting!r} is not a setting (core.settings.Settings)")
    return File(description=description, json_schema_extra={LIMIT_KEY: f"GENDEF_{setting.upper()}"})


def _files(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The file fields of a multipart body's schema (pydantic writes a file as a string of binary content)."""
    files = {}
    for name, prop in schema.get("properties", {}).items():
        if any(option.get("contentMediaType") for option in prop.get("anyOf", [prop])):
            files[name] = prop
    return files


def body_limits(spec: dict[str, Any], settings: Settings) -> dict[tuple[str, str], int]:
    """(method, path) of each operation of an OpenAPI document -> the most bytes its request body may have: a
    multipart form's is the sum of its files' limits plus MULTIPART_OVERHEAD, anything else's JSON_BODY_LIMIT.
    ValueError names a file field that declares no limit (declare it with ``upload_file``)."""
    limits = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            form = content.get("multipart/form-data")
            if form is None:
                limits[method.upper(), path] = JSON_BODY_LIMIT
                continue
            ref = form["schema"]["$ref"].rsplit("/", 1)[1]
            total = MULTIPART_OVERHEAD
            for name, prop in _files(spec["components"]["schemas"][ref]).items():
                if LIMIT_KEY not in prop:
                    raise ValueError(
                        f"{method.upper()} {path}: file field {name!r} declares no size limit: declare it with "
                        "service.uploads.upload_file"
                    )
                total += getattr(settings, prop[LIMIT_KEY].removeprefix("GENDEF_").lower())
            limits[method.upper(), path] = total
    return limits


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
    video.check(data, num_frames, limits)
    return info


class BodySizeLimit:
    """Refuse request bodies past a size with 413: at once from Content-Length, else as soon as the streamed
    body passes the limit (an HTTPException raised from ``receive``, which FastAPI's body parsing lets through).

    ``limits`` (``body_limits``) maps the (method, path template) of each route to its limit; a request that
    matches none gets JSON_BODY_LIMIT.
    """

    def __init__(self, app: ASGIApp, limits: dict[tuple[str, str], int]):
        self.app = app
        self.limits = [(method, compile_path(path)[0], limit) for (method, path), limit in limits.items()]

    def limit(self, scope: Scope) -> int:
        for method, path, limit in self.limits:
            if method == scope["method"] and path.fullmatch(scope["path"]):
                return limit
        return JSON_BODY_LIMIT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
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
