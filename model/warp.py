"""The coordinate convention, written once.

``fields[b, t, y, x] = (u, v)`` is the point of the canonical image that pixel (x, y) of frame t shows, in
``torch.nn.functional.grid_sample``'s normalized coordinates with ``align_corners=False``: u = -1 is the left edge
of the leftmost pixel, u = +1 the right edge of the rightmost; v likewise from top to bottom; order (x, y).
The identity field puts pixel (x, y) at ((2x + 1) / W - 1, (2y + 1) / H - 1). Frames are backward-warped:
``frame_t = grid_sample(canonical, fields_t, bilinear, padding border, align_corners=False)``; a point outside
the canonical image reads its nearest edge pixel (border padding: zero padding read mid-grey in [-1, 1] images and
drew grey blobs wherever a field left the image; the edge is what a camera panning past it would most nearly see). One pixel is 2 / W (x) or 2 / H (y) in these units.
The flow between frames, in canonical space: ``flow_{t -> t+1} = fields[:, t + 1] - fields[:, t]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 2) float32: the field of the identity warp (every pixel shows its own centre)."""
    xs = (2 * torch.arange(width, device=device, dtype=torch.float32) + 1) / width - 1  # (W,)
    ys = (2 * torch.arange(height, device=device, dtype=torch.float32) + 1) / height - 1  # (H,)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([gx, gy], dim=-1)  # (H, W, 2)


def render(canonical: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """Warp canonical images by their fields: (B, C, H, W), (B, T, h, w, 2) -> frames (B, T, C, h, w)."""
    if (
        canonical.ndim != 4
        or fields.ndim != 5
        or fields.shape[-1] != 2
        or fields.shape[0] != canonical.shape[0]
    ):
        raise ValueError(
            f"render expects canonical (B, C, H, W) and fields (B, T, H, W, 2) with the same B; "
            f"got {tuple(canonical.shape)} and {tuple(fields.shape)}"
        )
    B, T, h, w, _ = fields.shape
    src = canonical[:, None].expand(-1, T, -1, -1, -1).reshape(B * T, *canonical.shape[1:])  # (B*T, C, H, W)
    frames = F.grid_sample(
        src, fields.reshape(B * T, h, w, 2), mode="bilinear", padding_mode="border", align_corners=False
    )  # (B*T, C, h, w)
    return frames.reshape(B, T, -1, h, w)


def flow_from_fields(fields: torch.Tensor) -> torch.Tensor:
    """Flow between consecutive frames in canonical space: (B, T, H, W, 2) -> (B, T - 1, H, W, 2)."""
    return fields[:, 1:] - fields[:, :-1]
