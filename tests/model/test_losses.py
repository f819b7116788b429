"""Losses against hand-computed values."""

import math

import torch

from model.losses import discriminator_loss, edge_aware_smoothness, generator_loss, r1_penalty
from model.warp import flow_from_fields, identity_grid


def test_smoothness_is_zero_for_a_constant_flow():
    fields = identity_grid(8, 8) + torch.arange(3.0)[:, None, None, None] * torch.tensor(
        [0.1, -0.05]
    )  # (3, 8, 8, 2)
    flow = flow_from_fields(fields[None])[0]  # (2, 8, 8, 2): constant velocity
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    assert edge_aware_smoothness(flow, image) < 1e-7  # 0 up to the rounding of fields[t + 1] - fields[t]
    assert edge_aware_smoothness(flow, image, normalize=True) < 1e-5


def test_smoothness_on_a_step_edge_has_the_hand_computed_value():
    # flow x-component: columns [0, 1] on both rows; y-component 0.  Image: a single 2 at (x=1, y=0).
    flow = torch.zeros(1, 2, 2, 2)  # (N, H, W, 2)
    flow[0, :, 1, 0] = 1.0
    image = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]])  # (N=1, C=1, H=2, W=2)
    # d_x F: x-channel 1 on both rows, y-channel 0  -> 4 entries [1, 1, 0, 0]
    # image weights exp(-|d_x I|): row 0 exp(-2), row 1 exp(0) = 1 -> x-term (exp(-2) + 1) / 4;  d_y F = 0
    expected = (math.exp(-2) + 1) / 4
    assert abs(edge_aware_smoothness(flow, image).item() - expected) < 1e-6
    # mean-normalised: the x-channel's mean |F| is 0.5, so its differences double; the zero channel stays 0
    assert abs(edge_aware_smoothness(flow, image, normalize=True).item() - 2 * expected) < 1e-5


def test_gan_losses_at_zero_logits_and_their_direction():
    zero = torch.zeros(4)
    assert abs(generator_loss(zero).item() - math.log(2)) < 1e-6
    assert abs(discriminator_loss(zero, zero).item() - 2 * math.log(2)) < 1e-6
    # a discriminator that is right (real high, fake low) has a lower loss; the generator a higher one
    assert discriminator_loss(zero + 3, zero - 3) < discriminator_loss(zero, zero)
    assert generator_loss(zero - 3) > generator_loss(zero)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    x = torch.randn(5, 4, requires_grad=True)
    logits = (x * 3).sum(dim=1)  # gradient 3 on each of the 4 inputs -> ||grad||^2 = 4 * 9 = 36
    assert abs(r1_penalty(logits, x).item() - 36) < 1e-5
