"""Checks on request bodies before anything is queued: body size (ASGI middleware), image format and pixels."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}


class UploadRejected(Exception):
    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "PNG" | "JPEG"
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def check_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Accept a complete PNG or JPEG of at most ``max_pixels``; raise UploadRejected (415, 413 or 422) otherwise.

    The size is read from the header before any pixel is decoded, so a decompression bomb costs nothing; only
    an image within the cap is decoded, to refuse truncated or corrupt files now rather than in the worker.
    """
    fmt = next((f for sig, f in SIGNATURES.items() if data.startswith(sig)), None)
    if fmt is None:
        raise UploadRejected(415, "image must be a PNG or JPEG file (its first bytes are neither signature)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
        except Image.DecompressionBombError:
            raise UploadRejected(
                413,
                f"image has too many pixels: the limit is {max_pixels} (e.g. {_side(max_pixels)} squared)",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise UploadRejected(422, f"cannot read the {fmt} header ({e}); is the file complete?") from None
        width, height = image.size
        if width * height > max_pixels:
            raise UploadRejected(
                413,
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
                f"(e.g. {_side(max_pixels)} squared): resize it to the canonical image's size",
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise UploadRejected(
                422, f"the {fmt} image is truncated or corrupt ({e}); upload the complete file"
            ) from None
    return ImageInfo(fmt, width, height)


def _side(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}x{side}"


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
