"""Images: upload checks, the canonical PNG, decoding to pixels. Pillow, with its pixel cap on every decode.

Pixels are (H, W, 3) uint8 RGB arrays; the worker converts them to and from tensors (worker/media.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.errors import Invalid, TooLarge, UnsupportedFormat

SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "PNG" | "JPEG"
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def check_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Accept a complete PNG or JPEG of at most ``max_pixels``; raise UnsupportedFormat, TooLarge or Invalid otherwise.

    The size is read from the header before any pixel is decoded, so a decompression bomb costs nothing; only
    an image within the cap is decoded, to refuse truncated or corrupt files now rather than in the worker.
    """
    fmt = next((f for sig, f in SIGNATURES.items() if data.startswith(sig)), None)
    if fmt is None:
        raise UnsupportedFormat("image must be a PNG or JPEG file (its first bytes are neither signature)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
        except Image.DecompressionBombError:
            raise TooLarge(
                f"image has too many pixels: the limit is {max_pixels} (e.g. {_side(max_pixels)} squared)",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise Invalid(f"cannot read the {fmt} header ({e}); is the file complete?") from None
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
                f"(e.g. {_side(max_pixels)} squared): resize it to the canonical image's size",
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise Invalid(
                f"the {fmt} image is truncated or corrupt ({e}); upload the complete file"
            ) from None
    return ImageInfo(fmt, width, height)


def _side(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}x{side}"


class ImageError(ValueError):
    """Bytes that do not decode to an image."""


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> lossless 8-bit RGB PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG")
    return out.getvalue()


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """PNG/JPEG bytes -> ((H, W, 3) uint8 RGB, resized). Any mode is converted to RGB (alpha dropped). With
    ``size`` = (H, W), an image of another size is resized to it (bilinear) and ``resized`` is True. Past
    Pillow's pixel cap (Image.MAX_IMAGE_PIXELS, twice it is an error) nothing is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"not a decodable image: {e}") from e
    resized = size is not None and (rgb.height, rgb.width) != tuple(size)
    if resized:
        rgb = rgb.resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)
    return np.asarray(rgb), resized  # (H, W, 3)


def image_mode(data: bytes) -> str:
    """The mode of an image ("L", "P", "RGB" ...), from its header."""
    with Image.open(io.BytesIO(data)) as image:
        return image.mode


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image, from its header."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size
