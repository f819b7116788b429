"""Losses: the edge-aware smoothness of flows, the field regularisers, the non-saturating logistic GAN losses and
the R1 penalty.

The field regularisers keep a field a warp of the canonical image rather than a new picture made by folding it:
``offset_magnitude`` (how far points move from where they are), ``off_canvas_hinge`` (how far they read outside
the canonical image), ``offset_smoothness`` (edge-aware spatial smoothness of the offsets themselves, so also the
part of the field that is fixed over time, which the flow smoothness never sees), ``fold_hinge`` (where the map
pixel -> canonical point turns over, or squeezes an area below a margin, anywhere on the canvas) and
``distortion`` (how far the map's local shape is from a rotation: it stretches, squeezes or shears; the
edge-aware smoothness lets offsets change at an object's edges, so without it the fields bend objects instead
of moving them). ``acceleration`` keeps motion at a steady velocity over consecutive frames. Offsets are
measured in pixels of the frame, so weights read the same at every resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.metrics import jacobian_columns, jacobian_determinant, offsets_of, to_pixels, velocity_change


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


def acceleration(fields: torch.Tensor) -> torch.Tensor:
    """Mean length in pixels of c_{t+2} - 2 c_{t+1} + c_t over fields (..., T, H, W, 2) of consecutive frames,
    T >= 3: 0 for motion at constant velocity (GenDeF's "2to3" extrapolation, as a penalty on the fields; the
    evaluation's jitter as a loss). Scalar."""
    return velocity_change(fields).mean()


def offset_magnitude(fields: torch.Tensor) -> torch.Tensor:
    """Mean length in pixels of the offsets of fields (..., H, W, 2): 0 for the identity warp. Scalar."""
    return offsets_of(fields).norm(dim=-1).mean()


def off_canvas_hinge(fields: torch.Tensor) -> torch.Tensor:
    """Mean distance in pixels by which sample points lie outside the canonical image (0 inside); fields
    (..., H, W, 2). Scalar."""
    return to_pixels(F.relu(fields.abs() - 1)).sum(dim=-1).mean()


def offset_smoothness(fields: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the offsets in pixels per pixel: fields (N, H, W, 2), the frames they make
    (N, C, H, W) giving the edges where the offsets may change. Scalar."""
    return edge_aware_smoothness(offsets_of(fields), frames)


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


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of the generator: mean softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss of the discriminator: mean softplus(D(G(z))) + mean softplus(-D(x))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def label_loss(label_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN's auxiliary term: binary cross-entropy of label logits (B, classes) against multi-hot labels."""
    return F.binary_cross_entropy_with_logits(label_logits.float(), labels.float())


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1: ||d D(x) / dx||^2 at real clips (B, F, C, H, W) (which must require grad), summed over each frame's
    pixels and averaged over frames and samples, so clips of F frames weigh as single images; scale by gamma / 2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.square().flatten(2).sum(dim=2).mean()
