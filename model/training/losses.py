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

from model.fields import edge_aware_smoothness, field_offsets, to_pixels, velocity_change


def acceleration(fields: torch.Tensor) -> torch.Tensor:
    """Mean length in pixels of c_{t+2} - 2 c_{t+1} + c_t over fields (..., T, H, W, 2) of consecutive frames,
    T >= 3: 0 for motion at constant velocity (GenDeF's "2to3" extrapolation, as a penalty on the fields; the
    evaluation's jitter as a loss). Scalar."""
    return velocity_change(fields).mean()


def offset_magnitude(fields: torch.Tensor) -> torch.Tensor:
    """Mean length in pixels of the offsets of fields (..., H, W, 2): 0 for the identity warp. Scalar."""
    return field_offsets(fields).norm(dim=-1).mean()


def off_canvas_hinge(fields: torch.Tensor) -> torch.Tensor:
    """Mean distance in pixels by which sample points lie outside the canonical image (0 inside); fields
    (..., H, W, 2). Scalar."""
    return to_pixels(F.relu(fields.abs() - 1)).sum(dim=-1).mean()


def offset_smoothness(fields: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the offsets in pixels per pixel: fields (N, H, W, 2), the frames they make
    (N, C, H, W) giving the edges where the offsets may change. Scalar."""
    return edge_aware_smoothness(field_offsets(fields), frames)


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
