"""Discriminator: shapes, the time-gap conditioning, video-consistent augmentation."""

import dataclasses

import pytest
import torch

from model.config import preset
from model.discriminator import Discriminator, augment, minibatch_stddev


@pytest.fixture(scope="module")
def disc() -> Discriminator:
    torch.manual_seed(0)
    cfg = preset("tiny")
    return Discriminator(cfg.discriminator, cfg.resolution, frames_per_clip=3)


def test_logits_for_images_and_for_clips(disc):
    clips = torch.rand(4, 3, 3, 32, 32) * 2 - 1
    assert disc(clips, torch.tensor([[0.0, 1, 5]] * 4)).shape == (4,)
    assert disc(clips[:, :1], torch.zeros(4, 1)).shape == (4,)
    with pytest.raises(ValueError, match="1 or 3 frames per clip"):
        disc(clips[:, :2], torch.zeros(4, 2))


def test_time_gaps_condition_the_logits(disc):
    clips = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    near = disc(clips, torch.tensor([[0.0, 1, 2]] * 2))
    far = disc(clips, torch.tensor([[0.0, 10, 30]] * 2))
    shifted = disc(clips, torch.tensor([[7.0, 8, 9]] * 2))  # same gaps as `near`: only gaps matter
    assert (near - far).abs().max() > 1e-4
    torch.testing.assert_close(near, shifted)


def test_frame_differences_leave_still_clips_as_they_were_and_tell_moving_ones_apart():
    cfg = preset("tiny").discriminator
    torch.manual_seed(0)
    plain = Discriminator(cfg, 32)
    torch.manual_seed(0)
    with_diff = Discriminator(dataclasses.replace(cfg, frame_diff=True), 32)  # same weights, plus from_diff
    times = torch.tensor([[0.0, 2, 5]] * 2)
    still = (torch.rand(2, 1, 3, 32, 32) * 2 - 1).expand(2, 3, 3, 32, 32)
    torch.testing.assert_close(with_diff(still, times), plain(still, times))  # no difference: no extra input
    moving = torch.stack([still[:, 0], still[:, 0].roll(3, -1), still[:, 0].roll(6, -1)], dim=1)
    assert (with_diff(moving, times) - plain(moving, times)).abs().min() > 1e-3
    images = still[:, :1]
    torch.testing.assert_close(with_diff(images, times[:, :1]), plain(images, times[:, :1]))


def test_minibatch_stddev_of_identical_samples_is_zero_and_of_spread_samples_positive():
    x = torch.ones(4, 2, 3, 3)
    assert minibatch_stddev(x, 4)[:, -1].abs().max() < 1e-3
    y = minibatch_stddev(torch.randn(6, 2, 3, 3), 4)  # group of 3 (the largest size <= 4 dividing 6)
    assert y.shape == (6, 3, 3, 3) and (y[:, -1] > 0.1).all()


def test_augmentation_is_the_same_for_every_frame_of_a_clip():
    frame = torch.rand(2, 1, 3, 16, 16) * 2 - 1
    clips = frame.expand(2, 3, 3, 16, 16).clone()  # every clip: one image repeated
    out = augment(clips, p=1.0, generator=torch.Generator().manual_seed(1))
    assert out.shape == clips.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert (out - clips).abs().max() > 0.1  # it did change the clips
    assert torch.equal(augment(clips, p=0.0, generator=torch.Generator().manual_seed(1)), clips)


def test_augmentation_is_differentiable():
    clips = (torch.rand(2, 3, 3, 16, 16) * 2 - 1).requires_grad_(True)
    augment(clips, p=1.0, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert clips.grad is not None and clips.grad.abs().sum() > 0
