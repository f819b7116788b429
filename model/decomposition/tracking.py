"""What explicit deformation fields make possible beyond generation: point tracking and mask propagation.

Both read only a video's fields (``model/warp.py``'s convention: ``fields[t, y, x]`` is the canonical point that
pixel (x, y) of frame t shows, grid_sample units, align_corners=False). Pixel coordinates here put pixel centres
at integers: pixel (x, y) spans [x - 0.5, x + 0.5] x [y - 0.5, y + 0.5], so a point p of an image of width W is
u = (2 p + 1) / W - 1 in field units and back p = ((u + 1) W - 1) / 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A point is visible in a frame when the frame pixel found for it maps to it up to this many frame pixels: the
# nearest pixel centre of a smooth one-to-one field is within sqrt(2) / 2 px, so 1 px keeps every visible point
# and refuses points that no pixel shows (out of the frame, or hidden by content that moved over them).
VISIBLE_TOLERANCE_PX = 1.0


def to_field_units(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) pixel coordinates (x, y) of an image of height x width -> (..., 2) grid_sample units."""
    size = points.new_tensor([width, height])  # (2,)
    return (2 * points + 1) / size - 1


def to_pixels(coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) grid_sample units -> (..., 2) pixel coordinates (x, y) of an image of height x width."""
    size = coords.new_tensor([width, height])  # (2,)
    return ((coords + 1) * size - 1) / 2


def sample_fields(fields: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear value of each frame's field at frame pixel positions: (T, H, W, 2), (T, N, 2) px -> (T, N, 2)."""
    T, H, W, _ = fields.shape
    grid = to_field_units(points, H, W)[:, None]  # (T, 1, N, 2)
    out = F.grid_sample(
        fields.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (T, 2, 1, N)
    return out[:, :, 0].transpose(1, 2)  # (T, N, 2)


def track_points(
    fields: torch.Tensor,
    points: torch.Tensor,
    canonical_size: tuple[int, int],
    tolerance_px: float = VISIBLE_TOLERANCE_PX,
    iterations: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where canonical points appear in each frame.

    fields: (T, H, W, 2); points: (N, 2) pixel coordinates (x, y) in the canonical image of size
    canonical_size = (Hc, Wc). Per frame: the pixel whose field value is nearest the point (distances in
    canonical pixels), then Newton steps on the bilinearly interpolated field (Jacobian by central differences
    of half a pixel) for the sub-pixel position. Returns positions (T, N, 2) in frame pixels (x, y) and visible
    (T, N) bool: the position lies in the frame, is at most tolerance_px from the nearest pixel centre, and
    maps to the point up to tolerance_px canonical pixels.
    """
    T, H, W, _ = fields.shape
    Hc, Wc = canonical_size
    scale = fields.new_tensor([Wc / 2, Hc / 2])  # field units -> canonical pixels
    target = to_field_units(points.to(fields), Hc, Wc) * scale  # (N, 2) canonical px
    mapped = fields * scale  # (T, H, W, 2) canonical px
    nearest = torch.stack(
        [torch.cdist(target, mapped[t].reshape(-1, 2)).argmin(dim=1) for t in range(T)]
    )  # (T, N)
    p0 = torch.stack([nearest % W, nearest // W], dim=-1).to(fields)  # (T, N, 2) frame px
    half_x, half_y = fields.new_tensor([0.5, 0.0]), fields.new_tensor([0.0, 0.5])
    p, ok = p0, torch.ones(p0.shape[:2], dtype=torch.bool, device=fields.device)  # (T, N, 2), (T, N)
    for _ in range(iterations):
        residual = target - sample_fields(mapped, p)  # (T, N, 2)
        dx = sample_fields(mapped, p + half_x) - sample_fields(mapped, p - half_x)  # (T, N, 2) per px
        dy = sample_fields(mapped, p + half_y) - sample_fields(mapped, p - half_y)
        jac = torch.stack([dx, dy], dim=-1)  # (T, N, 2, 2): columns d/dx, d/dy
        invertible = torch.linalg.det(jac).abs() > 1e-6  # (T, N)
        ok = ok & invertible
        safe = torch.where(invertible[..., None, None], jac, torch.eye(2).to(jac))
        step = torch.linalg.solve(safe, residual[..., None])[..., 0]  # (T, N, 2)
        p = p + step.clamp(-2.0, 2.0)
    miss = (target - sample_fields(mapped, p)).norm(dim=-1)  # (T, N) canonical px
    inside = (p[..., 0] >= -0.5) & (p[..., 0] <= W - 0.5) & (p[..., 1] >= -0.5) & (p[..., 1] <= H - 0.5)
    visible = ok & inside & ((p - p0).norm(dim=-1) <= tolerance_px) & (miss <= tolerance_px)
    return p, visible  # (T, N, 2), (T, N)


def frame_points_to_canonical(
    fields: torch.Tensor, frame: int, points: torch.Tensor, canonical_size: tuple[int, int]
) -> torch.Tensor:
    """Canonical pixel coordinates of points given in frame `frame`: (T, H, W, 2), (N, 2) px -> (N, 2) px."""
    Hc, Wc = canonical_size
    coords = sample_fields(fields[frame : frame + 1], points.to(fields)[None])[0]  # (N, 2) field units
    return to_pixels(coords, Hc, Wc)


def propagate_mask(mask: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """Each frame's labels: the canonical label map sampled through the frame's field, nearest neighbour, so
    labels stay labels; outside the canonical image reads label 0. (Hc, Wc) uint8, (T, H, W, 2) -> (T, H, W)."""
    T = fields.shape[0]
    labels = mask.to(fields.device, torch.float32)[None, None].expand(T, 1, -1, -1)  # (T, 1, Hc, Wc)
    out = F.grid_sample(
        labels, fields, mode="nearest", padding_mode="zeros", align_corners=False
    )  # (T, 1, H, W)
    return out[:, 0].round().to(torch.uint8)  # (T, H, W)
