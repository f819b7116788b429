"""The coordinate convention, written once.

``fields[b, t, y, x] = (u, v)`` is the point of the canonical image that pixel (x, y) of frame t shows, in
``torch.nn.functional.grid_sample``'s normalized coordinates with ``align_corners=False``: u = -1 is the left edge
of the leftmost pixel, u = +1 the right edge of the rightmost; v likewise from top to bottom; order (x, y).
The identity field puts pixel (x, y) at ((2x + 1) / W - 1, (2y + 1) / H - 1). Frames are backward-warped:
``frame_t = grid_sample(canonical, fields_t, bicubic, padding border, align_corners=False)``: bicubic (Keys' cubic
convolution, a = -0.75) because a field that moves a picture by a fraction of a pixel should not blur it, and bilinear
does (at half a pixel it averages neighbours: Moving MNIST's sharp 3 px strokes lost most of what the digit
classifier reads in them; docs/TRAINING.md). Each of the 4x4 taps is clamped to the image (border padding), so a
point outside the canonical image reads its nearest edge pixels (zero padding read mid-grey in [-1, 1] images and
drew grey blobs wherever a field left the image; the edge is what a camera panning past it would most nearly see).
Bicubic overshoots a hard edge by up to about 10 % of its step: ``warp`` returns the raw values (training needs
them), and what turns frames into pixels clamps them (``GenDeF.sample``, the worker's 8-bit conversion).
Stored fields say how they are read (deformation.npz's ``meta["interpolation"]``, core/artifacts.py): the model's
are bicubic; a decomposed clip's are bilinear (its canonical image holds one tile per shot side by side, and bicubic
taps past a tile's edge would read the next shot's tile); files written before bicubic read bilinear.
One pixel is 2 / W (x) or 2 / H (y) in these units.
The flow between frames, in canonical space: ``flow_{t -> t+1} = fields[:, t + 1] - fields[:, t]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTERPOLATION = "bicubic"  # grid_sample's mode of the model's frames: see the module doc
INTERPOLATIONS = ("bilinear", "bicubic")  # what warp takes (bilinear: decomposed clips, older artifacts)


def identity_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 2) float32: the field of the identity warp (every pixel shows its own centre)."""
    xs = (2 * torch.arange(width, device=device, dtype=torch.float32) + 1) / width - 1  # (W,)
    ys = (2 * torch.arange(height, device=device, dtype=torch.float32) + 1) / height - 1  # (H,)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([gx, gy], dim=-1)  # (H, W, 2)


def warp(canonical: torch.Tensor, fields: torch.Tensor, interpolation: str = INTERPOLATION) -> torch.Tensor:
    """Warp canonical images by their fields: (B, C, H, W), (B, T, h, w, 2) -> frames (B, T, C, h, w), read with
    grid_sample's mode `interpolation` (the model's frames: bicubic; an artifact's: its meta says)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if (
        canonical.ndim != 4
        or fields.ndim != 5
        or fields.shape[-1] != 2
        or fields.shape[0] != canonical.shape[0]
    ):
        raise ValueError(
            f"warp expects canonical (B, C, H, W) and fields (B, T, H, W, 2) with the same B; "
            f"got {tuple(canonical.shape)} and {tuple(fields.shape)}"
        )
    B, T, h, w, _ = fields.shape
    src = canonical[:, None].expand(-1, T, -1, -1, -1).reshape(B * T, *canonical.shape[1:])  # (B*T, C, H, W)
    frames = F.grid_sample(
        src, fields.reshape(B * T, h, w, 2), mode=interpolation, padding_mode="border", align_corners=False
    )  # (B*T, C, h, w)
    return frames.reshape(B, T, -1, h, w)


def flow_from_fields(fields: torch.Tensor) -> torch.Tensor:
    """Flow between consecutive frames in canonical space: (B, T, H, W, 2) -> (B, T - 1, H, W, 2)."""
    return fields[:, 1:] - fields[:, :-1]
