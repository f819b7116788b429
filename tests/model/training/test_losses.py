"""Losses against hand-computed values."""

import math

import torch

from model.evaluation.metrics import field_health
from model.fields import distortion, edge_aware_smoothness, fold_hinge
from model.training.losses import (
    acceleration,
    discriminator_loss,
    generator_loss,
    off_canvas_hinge,
    offset_magnitude,
    offset_smoothness,
    r1_penalty,
)
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


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm_per_frame():
    x = torch.randn(5, 1, 1, 2, 2, requires_grad=True)  # 5 single-frame clips of 4 pixels
    logits = (x * 3).flatten(1).sum(dim=1)  # gradient 3 on each of the 4 inputs -> ||grad||^2 = 4 * 9 = 36
    assert abs(r1_penalty(logits, x).item() - 36) < 1e-5
    # clips of 3 frames with the same per-pixel gradient: a mean over frames, so still 36 (a sum would be 108)
    x3 = torch.randn(5, 3, 1, 2, 2, requires_grad=True)
    assert abs(r1_penalty((x3 * 3).flatten(1).sum(dim=1), x3).item() - 36) < 1e-5


def test_offset_magnitude_is_the_mean_shift_in_pixels():
    H, W = 4, 8
    assert offset_magnitude(identity_grid(H, W)) == 0
    # 3 pixels right (u += 3 * 2 / W) and 4 pixels down (v += 4 * 2 / H): 5 pixels everywhere
    shifted = identity_grid(H, W) + torch.tensor([3 * 2 / W, 4 * 2 / H])
    assert abs(offset_magnitude(shifted).item() - 5) < 1e-5
    # half of the rows shifted: the mean is half
    half = identity_grid(H, W).clone()
    half[:2] = shifted[:2]
    assert abs(offset_magnitude(half).item() - 2.5) < 1e-5


def test_acceleration_is_zero_at_constant_velocity_and_the_change_of_velocity_in_pixels():
    H, W = 4, 8
    px = torch.tensor([2 / W, 0.0])  # one pixel to the right
    c0 = identity_grid(H, W)
    assert acceleration(torch.stack([c0, c0 + 1.5 * px, c0 + 3 * px])) < 1e-6  # 1.5 px a frame, steadily
    assert (
        abs(acceleration(torch.stack([c0, c0 + 1.5 * px, c0])).item() - 3) < 1e-5
    )  # there and back: -1.5 - 1.5
    swing = c0 + torch.tensor([0.0, 2 * 2 / H])  # ... and 2 px down at frame 2 only: |(-3, 2)|
    assert abs(acceleration(torch.stack([c0, c0 + 1.5 * px, swing])).item() - math.sqrt(13)) < 1e-5


def test_off_canvas_hinge_counts_pixels_outside_only():
    H, W = 4, 4  # one pixel is 0.5 in field units
    assert (
        off_canvas_hinge(identity_grid(H, W)) == 0
    )  # every point inside (the outer pixel centres at +-0.75)
    fields = identity_grid(H, W).clone()
    fields[0, 0] = torch.tensor([-1.5, 0.0])  # 0.5 units = 1 pixel left of the canvas
    fields[1, 1] = torch.tensor([2.0, 2.0])  # 1 unit = 2 pixels outside in x and in y: 4
    assert abs(off_canvas_hinge(fields).item() - (1 + 4) / 16) < 1e-6


def test_offset_smoothness_ignores_a_constant_shift_and_sees_a_tear():
    H, W = 4, 4
    frames = torch.zeros(1, 3, H, W)  # flat image: every edge weight exp(0) = 1
    shifted = identity_grid(H, W) + torch.tensor([0.5, 0.0])  # 1 pixel right, everywhere
    assert offset_smoothness(shifted[None], frames) < 1e-6
    torn = identity_grid(H, W).clone()
    torn[:, 2:, 0] += 1.0  # right half shifted by 2 pixels: one jump of 2 per row in d_x
    # d_x offsets: x-channel rows [0, 2, 0] x 4 rows, y-channel 0 -> mean over 2 * 4 * 3 = 24 entries: 8 / 24
    assert abs(offset_smoothness(torn[None], frames).item() - 8 / 24) < 1e-5


def test_fold_hinge_is_zero_for_the_identity_and_positive_for_a_mirror():
    H, W = 4, 4
    assert fold_hinge(identity_grid(H, W), margin=0.2) == 0  # det J = 1 > margin everywhere
    mirrored = identity_grid(H, W) * torch.tensor([-1.0, 1.0])  # det J = -1 everywhere
    assert abs(fold_hinge(mirrored, margin=0.2).item() - 1.2) < 1e-5
    squeezed = identity_grid(H, W) * torch.tensor([0.1, 1.0])  # det J = 0.1 < margin 0.2
    assert abs(fold_hinge(squeezed, margin=0.2).item() - 0.1) < 1e-5


def test_distortion_is_zero_for_rigid_maps_and_hand_computed_for_stretch_and_shear():
    H, W = 8, 8
    grid = identity_grid(H, W)  # (H, W, 2), x then y
    angle = math.radians(30)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for rigid in (
        grid,
        grid + torch.tensor([0.25, -0.5]),
        grid @ rotation.T,
    ):  # identity, translation, rotation
        assert distortion(rigid[None]).item() < 1e-5
    # uniform scale by 2: J^T J - I = 3 I, Frobenius norm 3 sqrt(2)
    assert abs(distortion((grid * 2)[None]).item() - 3 * math.sqrt(2)) < 1e-4
    # x squeezed to half: J = diag(0.5, 1), J^T J - I = diag(-0.75, 0)
    assert abs(distortion((grid * torch.tensor([0.5, 1.0]))[None]).item() - 0.75) < 1e-5
    # shear u = x + k y (k = 0.5): J = [[1, k], [0, 1]], J^T J - I = [[0, k], [k, k^2]] -> |k| sqrt(2 + k^2)
    sheared = grid.clone()
    sheared[..., 0] += (
        0.5 * grid[..., 1]
    )  # both axes span the same range, so k is 0.5 in pixels per pixel too
    assert abs(distortion(sheared[None]).item() - 0.5 * math.sqrt(2.25)) < 1e-5
    # only where the map distorts: one bent column among rigid ones gives a smaller, positive mean
    bent = grid.clone()
    bent[:, 4, 0] += 0.25  # one column moved 1 pixel right: stretched on its left, squeezed on its right
    assert 0 < distortion(bent[None]).item() < distortion((grid * torch.tensor([0.5, 1.0]))[None]).item()


def test_distortion_with_frames_counts_only_where_the_frame_shows_something():
    H, W = 16, 16
    grid = identity_grid(H, W)
    squeezed = (grid * torch.tensor([0.5, 1.0]))[None]  # 0.75 at every point
    flat = torch.zeros(1, 3, H, W)
    assert distortion(squeezed, flat).item() < 1e-6  # nothing to see: no weight anywhere, 0
    striped = flat.clone()
    striped[..., ::2] = (
        1.0  # texture everywhere: every weight 1 - exp(-1), the weighted mean is the plain one
    )
    assert abs(distortion(squeezed, striped).item() - 0.75) < 1e-5
    # a map bent only in the left half, the frame textured only in the right half: no distortion where it is seen
    bent = grid.clone()
    bent[:, :6, 0] = bent[:, :6, 0] * 0.5  # columns 0-5 squeezed toward the middle
    right = flat.clone()
    right[..., 10:] = striped[..., 10:]
    assert distortion(bent[None], right).item() < 1e-5
    assert distortion(bent[None], striped).item() > 0.1  # the same bend under texture is seen


def test_field_health_of_a_fixed_lens_and_of_pure_motion():
    H, W, T = 8, 8, 4
    lens = (identity_grid(H, W) + torch.tensor([0.25, 0.0])).expand(1, T, H, W, 2)  # 1 px right, every frame
    h = field_health(lens)
    assert abs(h["static_share"] - 1) < 1e-5 and abs(h["mean_offset"] - 1) < 1e-5 and h["motion"] < 1e-6
    assert (
        h["folds"] == 0 and h["off_canvas"] == 1 / 8 and abs(h["frame0_offset"] - 1) < 1e-5
    )  # last column out
    # moving +-1 pixel around the identity: the mean offset over time is 0, nothing is fixed
    swing = torch.tensor([0.25, -0.25, 0.25, -0.25])[:, None, None, None] * torch.tensor([1.0, 0.0])
    h = field_health((identity_grid(H, W) + swing)[None])
    assert h["static_share"] < 1e-6 and abs(h["motion"] - 2) < 1e-5
