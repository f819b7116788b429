"""How things move (model.evaluation.motion): trajectories of digits followed through fields, bounces, and the
share of motion one affine map does not explain, on cases whose answer is known by construction."""

import pytest
import torch

from model.data import MovingMNIST
from model.evaluation import motion
from model.warp import identity_grid, warp

SIZE = 64
PX = 2 / SIZE  # one pixel in field units


def two_squares() -> torch.Tensor:
    """A canonical image (1, 3, 64, 64) in [-1, 1]: black, a white 8x8 square at x 8..15 and one at x 44..51."""
    image = torch.full((1, 3, SIZE, SIZE), -1.0)
    image[..., 20:28, 8:16] = 1.0
    image[..., 36:44, 44:52] = 1.0
    return image


def fields_of(shift_left, shift_right, frames: int) -> torch.Tensor:
    """Fields (1, T, 64, 64, 2) that move the content of the left half of the frame right by shift_left(t) pixels
    and the right half's by shift_right(t) (backward: a pixel reads the canonical point the shift left behind)."""
    grid = identity_grid(SIZE, SIZE)
    left = grid[..., 0] < 0  # (H, W)
    out = []
    for t in range(frames):
        dx = torch.where(left, shift_left(t), shift_right(t)) * PX
        out.append(grid - torch.stack([dx, torch.zeros_like(dx)], dim=-1))
    return torch.stack(out)[None]


def test_the_two_digits_of_a_canonical_image_are_found_and_followed_through_the_fields():
    canonical = two_squares()
    masks = motion.digit_masks(canonical)  # (1, 2, H, W), ordered left to right
    assert masks.shape == (1, 2, SIZE, SIZE)
    assert masks[0, 0, 20:28, 8:16].eq(1).all() and masks[0, 0].sum() == 64
    assert masks[0, 1, 36:44, 44:52].eq(1).all() and masks[0, 1].sum() == 64
    # the left square moves right 1 px a frame, the right one left 2 px a frame: they approach by 3 a frame
    fields = fields_of(lambda t: float(t), lambda t: -2.0 * t, frames=6)
    digits = motion.follow(masks, fields)  # (1, 2, T, H, W)
    centroids, boxes = motion.tracks(digits)
    assert centroids[0, 0, :, 0] == pytest.approx([11.5 + t for t in range(6)], abs=1e-4)
    assert centroids[0, 1, :, 0] == pytest.approx([47.5 - 2 * t for t in range(6)], abs=1e-4)
    assert boxes[0, 1, 5].tolist() == [34.0, 36.0, 42.0, 44.0]  # x 34..41, y 36..43
    # what the frames show is what was followed: the frames' ink is the two followed squares
    frames = warp(canonical, fields)[:, :, 0]  # (1, T, H, W)
    assert torch.equal((frames > 0), (digits.amax(dim=1) > 0.5))
    stats = motion.trajectory_stats(digits)
    assert stats["relative_displacement_px"]["mean"] == pytest.approx(15, abs=1e-3)  # 3 px a frame, 5 frames
    assert stats["common_displacement_px"]["mean"] == pytest.approx(2.5, abs=1e-3)  # midpoint: -0.5 a frame
    assert stats["speed_px_per_frame"]["mean"] == pytest.approx(1.5, abs=1e-3)  # 1 and 2
    assert stats["bounce_share"] == 0


def test_one_picture_sliding_has_no_relative_displacement():
    digits = motion.generated_digits(two_squares(), fields_of(lambda t: 1.0 * t, lambda t: 1.0 * t, frames=8))
    stats = motion.trajectory_stats(digits)
    assert stats["relative_displacement_px"]["mean"] == pytest.approx(0, abs=1e-4)
    assert stats["common_displacement_px"]["mean"] == pytest.approx(7, abs=1e-3)


def test_touching_digits_are_split_in_two():
    image = torch.full((1, 3, SIZE, SIZE), -1.0)
    image[..., 30:34, 10:50] = 1.0  # one bar: two digits drawn touching
    masks = motion.digit_masks(image)
    assert masks[0, 0].sum() == masks[0, 1].sum() == 80  # half each
    assert (
        masks[0, 0, :, :30].sum() == 80 and masks[0, 1, :, 30:].sum() == 80
    )  # the left half, the right half


def test_a_stray_stroke_joins_the_nearer_digit():
    image = two_squares()
    image[..., 22, 18] = 1.0  # a dot 3 px right of the left square
    masks = motion.digit_masks(image)
    assert masks[0, 0, 22, 18] == 1 and masks[0, 1, 22, 18] == 0


def test_a_turn_at_a_wall_is_a_bounce_and_a_turn_mid_canvas_is_not():
    T = 12
    x = torch.tensor([50.0 - abs(t - 6) * 2 for t in range(T)])  # right to x 50, then back
    centroids = torch.stack([x, torch.full((T,), 30.0)], dim=-1)  # (T, 2)
    boxes = torch.stack([x - 8, torch.full((T,), 26.0), x + 8, torch.full((T,), 34.0)], dim=-1)  # ink 16 wide
    assert motion.bounces(centroids, boxes, (SIZE, SIZE))  # its ink reached x 58: 6 px from the wall
    assert not motion.bounces(centroids - torch.tensor([20.0, 0]), boxes - 20, (SIZE, SIZE))  # mid canvas
    straight = centroids.clone()
    straight[:, 0] = torch.arange(T) * 2.0 + 20
    assert not motion.bounces(straight, boxes, (SIZE, SIZE))


def test_real_moving_mnist_digits_are_drawn_alone_and_move_on_their_own():
    mnist = MovingMNIST(SIZE, split="heldout")
    times = torch.arange(16.0).expand(64, -1)
    frames, labels, digits, corners = mnist.draw_tracked(times, torch.Generator().manual_seed(0))
    again, labels_again = mnist.draw(times, torch.Generator().manual_seed(0))
    assert torch.equal(frames, again) and torch.equal(labels, labels_again)  # draw is draw_tracked's clips
    assert torch.equal(
        digits.amax(dim=1) * 2 - 1, frames[:, :, 0]
    )  # the frame: the brighter of the two digits
    stats = motion.trajectory_stats(digits)
    assert stats["lost"] == 0
    # 1-3 px a frame each, independent directions, over 15 frames: about 26 px apart or together (measured)
    assert stats["relative_displacement_px"]["mean"] > 20
    assert 1.5 < stats["speed_px_per_frame"]["mean"] < 2.5
    assert stats["bounce_share"] > 0.6  # 16 frames on a 64 px canvas: most clips have a bounce


def test_one_affine_map_explains_an_affine_flow_and_not_two_objects_moving_apart():
    H = W = 32
    p = identity_grid(H, W) * 16  # (H, W, 2)
    weights = torch.ones(2, H, W)
    affine = p @ torch.tensor([[0.1, 0.02], [-0.03, 0.05]]) + torch.tensor([1.5, -2.0])  # (H, W, 2)
    apart = torch.zeros(H, W, 2)
    apart[:, : W // 2, 0], apart[:, W // 2 :, 0] = -2.0, 2.0  # the halves move apart: no affine map does it
    share, magnitude = motion.affine_share(torch.stack([affine, apart]), weights)
    assert share[0] == pytest.approx(0, abs=1e-6)
    assert share[1] > 0.2  # a linear ramp fits part of a step
    assert magnitude[1] == pytest.approx(2.0)


def test_dis_flow_finds_a_translation_of_a_textured_picture():
    gen = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 80, 80, generator=gen) * 2 - 1, 3, 1, 1)
    frames = torch.stack([texture[..., 8:72, 8 - 2 * t : 72 - 2 * t] for t in range(3)], dim=1)  # 2 px right
    flow = motion.dis_flow(frames, gap=1)  # (1, 2, 64, 64, 2)
    inner = flow[:, :, 8:-8, 8:-8]
    assert inner[..., 0].median() == pytest.approx(2.0, abs=0.1) and inner[..., 1].abs().median() < 0.1
    stats = motion.independent_motion(flow, frames)
    assert stats["non_affine_share"] < 0.05 and stats["flow_px"] == pytest.approx(2.0, abs=0.3)


def test_field_flow_is_the_motion_the_frames_show():
    fields = fields_of(
        lambda t: 1.5 * t, lambda t: 1.5 * t, frames=4
    )  # the picture moves right 1.5 px a frame
    flow = motion.field_flow(fields, gap=2)  # (1, 2, H, W, 2)
    assert flow[..., 0] == pytest.approx(torch.full_like(flow[..., 0], 3.0), abs=1e-4)
    assert flow[..., 1].abs().max() < 1e-5
