"""Point tracking and mask propagation on fields whose answers are known by hand."""

import torch

from model.decomposition.tracking import frame_points_to_canonical, propagate_mask, track_points
from model.warp import identity_grid


def shifted(height: int, width: int, shifts_px: list[tuple[float, float]]) -> torch.Tensor:
    """Fields of frames that show the canonical image moved by (dx, dy) pixels: pixel p shows canonical p - d.
    (T, H, W, 2)."""
    grid = identity_grid(height, width)  # (H, W, 2)
    units = torch.tensor([2 / width, 2 / height])
    return torch.stack([grid - torch.tensor(d) * units for d in shifts_px])


def test_a_translated_point_moves_by_the_shift_and_turns_invisible_when_it_leaves() -> None:
    fields = shifted(16, 20, [(0, 0), (3, -2), (2.5, 1.25), (10, 0)])  # (4, 16, 20, 2)
    points = torch.tensor([[5.0, 7.0], [12.25, 3.5]])  # canonical px
    positions, visible = track_points(fields, points, (16, 20))
    # Content moved by d shows canonical point q at q + d.
    assert torch.allclose(positions[1], points + torch.tensor([3.0, -2.0]), atol=1e-4)
    assert torch.allclose(positions[2], points + torch.tensor([2.5, 1.25]), atol=1e-4)
    assert torch.allclose(positions[0], points, atol=1e-4)
    assert visible[:3].all()
    # Frame 3: the first point is at x = 15 (in the 20 px frame), the second at x = 22.25: it has left.
    assert visible[3].tolist() == [True, False]
    assert abs(float(positions[3, 0, 0]) - 15.0) < 1e-4


def test_a_point_no_pixel_shows_is_invisible() -> None:
    """Frame pixels 8..15 show the canonical's columns 0..7 again (a fold): columns 8..15 are hidden."""
    fields = identity_grid(8, 16)[None].clone()  # (1, 8, 16, 2)
    fields[0, :, 8:, 0] = fields[0, :, :8, 0]
    _, visible = track_points(fields, torch.tensor([[3.0, 4.0], [12.0, 4.0]]), (8, 16))
    assert visible[0].tolist() == [True, False]


def test_points_given_in_a_frame_map_to_the_canonical_and_back() -> None:
    fields = shifted(16, 16, [(0, 0), (4, 1)])
    canonical = frame_points_to_canonical(fields, 1, torch.tensor([[9.0, 6.0]]), (16, 16))
    assert torch.allclose(canonical, torch.tensor([[5.0, 5.0]]), atol=1e-5)


def test_tracking_follows_a_scaled_canonical_of_another_size() -> None:
    """Frames 8x8 show a 16x16 canonical at half scale (each frame pixel spans 2 canonical pixels)."""
    fields = identity_grid(8, 8)[None]  # (1, 8, 8, 2): the whole canonical in the frame
    positions, visible = track_points(fields, torch.tensor([[10.5, 2.5]]), (16, 16))
    # canonical x = 10.5 -> u = 22/16 - 1 = 0.375 -> frame x = (1.375 * 8 - 1) / 2 = 5.0; y: 2.5 -> 1.0
    assert torch.allclose(positions[0, 0], torch.tensor([5.0, 1.0]), atol=1e-4)
    assert visible.all()


def test_a_mask_under_a_shift_lands_where_expected_with_its_labels() -> None:
    mask = torch.zeros(10, 12, dtype=torch.uint8)
    mask[2:5, 3:6] = 7
    mask[6:8, 0:2] = 200
    masks = propagate_mask(mask, shifted(10, 12, [(0, 0), (2, 1), (-1, 0)]))  # (3, 10, 12)
    assert masks.dtype == torch.uint8 and masks.shape == (3, 10, 12)
    assert torch.equal(masks[0], mask)
    expected = torch.zeros_like(mask)
    expected[3:6, 5:8] = 7
    expected[7:9, 2:4] = 200
    assert torch.equal(masks[1], expected)
    # Moved left by 1: column 0 of label 200 leaves the frame, column 11 shows outside the canonical (label 0).
    expected = torch.zeros_like(mask)
    expected[2:5, 2:5] = 7
    expected[6:8, 0:1] = 200
    assert torch.equal(masks[2], expected)
    assert set(masks.unique().tolist()) == {0, 7, 200}
