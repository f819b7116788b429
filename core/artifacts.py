"""Artifact files: their names, content types, and the deformation ``.npz`` format, written and read here only.

deformation.npz (docs/API.md): ``fields`` float32 (T, H, W, 2), ``fields[t, y, x]`` the point of the canonical
image that pixel (x, y) of frame t shows, in grid_sample's normalized coordinates; ``meta`` a JSON string that
repeats the convention and records what made the fields. NumPy only: the API reads headers, the worker converts
to and from torch itself.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

# Written into every deformation.npz so the file explains itself (docs/API.md, docs/DESIGN.md).
FIELDS_CONVENTION = (
    "fields[t, y, x] = (u, v) is the point of the canonical image that pixel (x, y) of frame t shows, in "
    "torch.nn.functional.grid_sample's normalized coordinates: order (x, y), u = -1 is the left edge of the "
    "leftmost pixel and u = +1 the right edge of the rightmost (align_corners=False). "
    "frames = grid_sample(canonical, fields, mode=meta['interpolation'], padding_mode='border', "
    "align_corners=False), clamped to the image's range (bicubic overshoots an edge a little)."
)

# grid_sample's mode of a file whose meta has no "interpolation": what every file was rendered with before the
# model's frames went bicubic (2026-12-06), so that their edits, tracks and renders read them as they were made.
LEGACY_INTERPOLATION = "bilinear"

VIDEO_CONTENT_TYPE = "video/mp4"
PNG_CONTENT_TYPE = "image/png"
NPZ_CONTENT_TYPE = "application/octet-stream"

# Artifact name in the job document -> (file name under jobs/{id}/, content type)
ARTIFACT_FILES = {
    "canonical": ("canonical.png", PNG_CONTENT_TYPE),
    "deformation": ("deformation.npz", NPZ_CONTENT_TYPE),
    "video": ("video.mp4", VIDEO_CONTENT_TYPE),
    "tracks": ("tracks.json", "application/json"),  # track
    "masks": ("masks.npz", NPZ_CONTENT_TYPE),  # segment
}


class ArtifactError(ValueError):
    """Bytes that are not the artifact format expected."""


def encode_fields(fields: np.ndarray, meta: dict[str, Any], joins: np.ndarray | None = None) -> bytes:
    """(T, H, W, 2) fields + meta -> .npz bytes: `fields` float32 (T, H, W, 2), `meta` a JSON string, and for a
    decomposed clip in segments `join_fields` float32 (J, 2, H, W, 2) (meta["joins"] says what they are)."""
    if fields.ndim != 4 or fields.shape[-1] != 2:
        raise ValueError(f"fields must be (T, H, W, 2), got {tuple(fields.shape)}")
    arrays = {"fields": fields.astype(np.float32), "meta": np.array(json.dumps(meta, sort_keys=True))}
    if joins is not None and len(joins):
        arrays["join_fields"] = joins.astype(np.float32)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode_fields(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """.npz bytes -> ((T, H, W, 2) float32 fields, meta dict)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            fields = npz["fields"].astype(np.float32)  # (T, H, W, 2)
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"not a deformation .npz: {e}") from e
    if fields.ndim != 4 or fields.shape[-1] != 2:
        raise ArtifactError(f"deformation fields must be (T, H, W, 2), got {tuple(fields.shape)}")
    interpolation_of(meta)  # a file that says how to read it says something render knows
    return fields, meta


def decode_joins(data: bytes) -> np.ndarray:
    """The join fields (J, 2, H, W, 2) float32 of a deformation .npz (J = 0 when it has none)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "join_fields" not in npz:
                fields = npz["fields"]
                return np.zeros((0, 2, *fields.shape[1:]), np.float32)
            return npz["join_fields"].astype(np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"not a deformation .npz: {e}") from e


def fields_shape(data: bytes) -> tuple[int, int, int]:
    """(T, H, W) of the fields in a deformation.npz, read from the .npy header alone (no array is loaded)."""
    with zipfile.ZipFile(io.BytesIO(data)) as npz, npz.open("fields.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
        )
        shape, _, _ = read_header(f)
    return shape[0], shape[1], shape[2]


def fields_meta(data: bytes) -> dict[str, Any]:
    """The meta of a deformation.npz, without loading its fields."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"not a deformation .npz: {e}") from e


def interpolation_of(meta: dict[str, Any]) -> str:
    """grid_sample's mode that renders these fields: "bicubic" or "bilinear" (core's own check: no torch here)."""
    mode = meta.get("interpolation", LEGACY_INTERPOLATION)
    if mode not in ("bilinear", "bicubic"):
        raise ArtifactError(f"unknown interpolation {mode!r} in the deformation meta (bilinear or bicubic)")
    return mode


def shots_of(meta: dict[str, Any], num_frames: int, canonical_width: int) -> list[dict[str, int]]:
    """The shots of a job's fields: [{start, frames, x, width}], frames [start, start + frames) showing the tile of
    the canonical image at x, `width` wide (a decomposed clip with cuts has several; any other job one, all of it)."""
    shots = meta.get("shots") or [{"start": 0, "frames": num_frames, "x": 0, "width": canonical_width}]
    return [{k: int(s[k]) for k in ("start", "frames", "x", "width")} for s in shots]
