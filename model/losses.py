"""Losses: the edge-aware smoothness of flows, the non-saturating logistic GAN losses and the R1 penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of the generator: mean softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss of the discriminator: mean softplus(D(G(z))) + mean softplus(-D(x))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1: mean over samples of ||d D(x) / dx||^2 at real inputs (which must require grad); scale by gamma / 2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()
