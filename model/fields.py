"""Geometry of deformation fields, in pixels of the frame, and the regularisers that keep a field a motion.

Fields follow ``model.warp``'s convention: (..., H, W, 2), the canonical point each pixel shows, in grid_sample's
normalized units (one pixel is 2 / W in x, 2 / H in y). Pure functions, shared by the GAN's losses
(model/training), the evaluation (model/evaluation) and the fitting of a user's clip (model/decomposition).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.warp import identity_grid


def to_pixels(v: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 2) field differences -> pixels of the frame (x scaled by W / 2, y by H / 2)."""
    H, W = v.shape[-3], v.shape[-2]
    return v * torch.tensor([W / 2, H / 2], dtype=v.dtype, device=v.device)


def velocity_change(fields: torch.Tensor) -> torch.Tensor:
    """Length in pixels of c_{t+2} - 2 c_{t+1} + c_t at every point of fields (..., T, H, W, 2) of consecutive
    frames, T >= 3 -> (..., T-2, H, W): 0 for motion at constant velocity. Differentiable (losses.acceleration)."""
    c = fields
    return to_pixels(c[..., 2:, :, :, :] - 2 * c[..., 1:-1, :, :, :] + c[..., :-2, :, :, :]).norm(dim=-1)


def jacobian_columns(fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Jacobian d(c)/d(p) of the map pixel -> canonical point, in pixels per pixel, by forward differences:
    fields (..., H, W, 2) -> its columns d(u, v)/dx and d(u, v)/dy, each (..., H - 1, W - 1, 2)."""
    c = to_pixels(fields)
    return c[..., :-1, 1:, :] - c[..., :-1, :-1, :], c[..., 1:, :-1, :] - c[..., :-1, :-1, :]


def jacobian_determinant(fields: torch.Tensor) -> torch.Tensor:
    """det d(c)/d(p) of the map pixel -> canonical point (1 for the identity): fields (..., H, W, 2) ->
    (..., H - 1, W - 1)."""
    dx, dy = jacobian_columns(fields)
    return dx[..., 0] * dy[..., 1] - dy[..., 0] * dx[..., 1]


def field_offsets(fields: torch.Tensor) -> torch.Tensor:
    """fields (..., H, W, 2) -> offsets from the identity, in pixels of the frame (..., H, W, 2)."""
    H, W = fields.shape[-3:-1]
    return to_pixels(fields - identity_grid(H, W, device=fields.device))


def edge_aware_smoothness(flow: torch.Tensor, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """First-order edge-aware smoothness (monodepth2's, as GenDeF uses it on flows of consecutive frames):

        mean(|d_x F| * exp(-mean_c |d_x I|)) + mean(|d_y F| * exp(-mean_c |d_y I|))

    flow: (N, H, W, 2) in field units; image: (N, C, H, W), the frame whose edges may carry motion edges
    (detached here: the loss shapes the flow, not the image). normalize divides each flow channel by its mean
    absolute value per sample first, so the loss does not simply shrink the motion. Returns a scalar.
    """
    f = flow.permute(0, 3, 1, 2)  # (N, 2, H, W)
    if normalize:
        f = f / (f.abs().mean(dim=(2, 3), keepdim=True) + 1e-7)
    image = image.detach()
    fx, fy = (
        (f[..., :, 1:] - f[..., :, :-1]).abs(),
        (f[..., 1:, :] - f[..., :-1, :]).abs(),
    )  # (N, 2, H, W-1), (N, 2, H-1, W)
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=1, keepdim=True)  # (N, 1, H, W-1)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=1, keepdim=True)  # (N, 1, H-1, W)
    return (fx * torch.exp(-ix)).mean() + (fy * torch.exp(-iy)).mean()


def fold_hinge(fields: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of relu(margin - det J) over the Jacobian of pixel -> canonical point (pixels per pixel; 1 for the
    identity, <= 0 where the map folds): fields (..., H, W, 2). Scalar."""
    return F.relu(margin - jacobian_determinant(fields)).mean()


def distortion(fields: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    """How far the map pixel -> canonical point is locally from a rotation: ||J^T J - I||_F, J its Jacobian in
    pixels per pixel, 0 where the map is locally a translation or a rotation, sqrt(2) |s^2 - 1| for a uniform scale
    by s, |k| sqrt(2 + k^2) for a shear by k. fields (N, H, W, 2) (or (..., H, W, 2) without frames).

    Without frames: the mean over points. With the frames the fields make (N, C, H, W): the mean weighted by
    ``content_weights`` (where the frame has edges or texture), so a map may stretch empty background, where no
    one sees it (two digits moving apart stretch the black between them), but not the objects on it. Scalar."""
    dx, dy = jacobian_columns(fields)  # (..., H-1, W-1, 2) each
    a = dx.square().sum(dim=-1) - 1  # (J^T J - I)[0, 0]
    d = dy.square().sum(dim=-1) - 1  # (J^T J - I)[1, 1]
    b = (dx * dy).sum(dim=-1)  # off-diagonal, twice in the Frobenius norm
    per_point = (a.square() + d.square() + 2 * b.square() + 1e-12).sqrt()  # (..., H-1, W-1)
    if frames is None:
        return per_point.mean()
    w = content_weights(frames)  # (N, H-1, W-1)
    return ((w * per_point).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1e-6)).mean()


def content_weights(frames: torch.Tensor) -> torch.Tensor:
    """Where frames (N, C, H, W) show something: 1 - exp(-g), g the channel-mean of |d_x I| + |d_y I| at each
    point of the Jacobian grid (forward differences, (N, H-1, W-1)), averaged over its 3x3 neighbourhood so a thin
    stroke's inside counts too; 0 on flat background. Detached: it shapes the fields, not the frames."""
    x = frames.detach()
    gx = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()  # (N, C, H-1, W-1)
    gy = (x[..., 1:, :-1] - x[..., :-1, :-1]).abs()
    g = (gx + gy).mean(dim=1, keepdim=True)  # (N, 1, H-1, W-1)
    g = F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return 1 - torch.exp(-g[:, 0])
