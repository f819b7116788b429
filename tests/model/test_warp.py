"""The coordinate convention of model.warp, against hand-computed expectations and an independent sampler."""

import math

import numpy as np
import pytest
import torch

from model.warp import flow_from_fields, identity_grid, warp


def test_identity_grid_values_are_pixel_centres_in_x_y_order():
    grid = identity_grid(2, 4)  # H = 2, W = 4
    assert grid.shape == (2, 4, 2)
    # x of the 4 pixel centres: (2x + 1) / 4 - 1; y of the 2 rows: (2y + 1) / 2 - 1
    assert grid[0, :, 0].tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert grid[:, 0, 1].tolist() == [-0.5, 0.5]
    assert grid[1, 3].tolist() == [0.75, 0.5]


def test_identity_field_reproduces_the_canonical_image():
    canonical = torch.rand(2, 3, 5, 7) * 2 - 1
    fields = identity_grid(5, 7).expand(2, 4, 5, 7, 2)  # (B, T, H, W, 2)
    frames = warp(canonical, fields)
    assert frames.shape == (2, 4, 3, 5, 7)
    for t in range(4):
        torch.testing.assert_close(frames[:, t], canonical, rtol=0, atol=1e-6)


def test_constant_translation_shifts_by_the_expected_number_of_pixels():
    H, W, dx, dy = 6, 8, 2, -1
    canonical = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W)
    # pixel (x, y) shows canonical pixel (x + dx, y + dy): one pixel is 2 / W in u and 2 / H in v
    fields = identity_grid(H, W) + torch.tensor([2 * dx / W, 2 * dy / H])
    frame = warp(canonical, fields[None, None])[0, 0, 0]  # (H, W)
    expected = torch.zeros(H, W)
    for y in range(H):
        for x in range(W):  # outside the canonical image: its nearest edge pixel (border padding)
            expected[y, x] = canonical[0, 0, min(max(y + dy, 0), H - 1), min(max(x + dx, 0), W - 1)]
    torch.testing.assert_close(frame, expected, rtol=0, atol=1e-4)
    # by hand: row 0 reads row -1 (outside: the edge row 0, so pixel (0, 0) shows canonical (2, 0) = 2);
    # pixel (0, 1) shows canonical pixel (2, 0), whose value is 2; pixel (7, 1) reads column 9 -> edge column 7
    assert abs(frame[0, 0] - 2) < 1e-5 and abs(frame[1, 0] - 2) < 1e-5 and abs(frame[1, 7] - 7) < 1e-5


def _keys_cubic(d: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel at distance d (the weights grid_sample's bicubic mode uses)."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0


def _bicubic_border_padding(image: np.ndarray, u: float, v: float) -> np.ndarray:
    """Independent reference: sample image (C, H, W) at normalized (u, v), align_corners=False, bicubic over the
    4x4 pixels around the point, each tap's index clamped into the image (border padding)."""
    C, H, W = image.shape
    px, py = ((u + 1) * W - 1) / 2, ((v + 1) * H - 1) / 2  # pixel coordinates, centre of pixel i = i
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(C)
    for yy in range(y0 - 1, y0 + 3):
        for xx in range(x0 - 1, x0 + 3):
            weight = _keys_cubic(px - xx) * _keys_cubic(py - yy)
            out += weight * image[:, min(max(yy, 0), H - 1), min(max(xx, 0), W - 1)]
    return out


def test_affine_field_matches_an_independent_bicubic_sampler():
    H, W = 9, 11
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, size=(3, H, W))
    angle, scale, shift = 0.3, 0.8, np.array([0.1, -0.2])
    A = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    grid = identity_grid(H, W).numpy().astype(np.float64)  # (H, W, 2)
    coords = grid @ A.T + shift  # (H, W, 2): an affine map of the identity field, partly outside the image
    frame = warp(
        torch.tensor(image, dtype=torch.float32)[None], torch.tensor(coords, dtype=torch.float32)[None, None]
    )
    expected = np.stack(
        [
            np.stack([_bicubic_border_padding(image, *coords[y, x]) for x in range(W)], axis=-1)
            for y in range(H)
        ],
        axis=-2,
    )  # (3, H, W)
    np.testing.assert_allclose(frame[0, 0].numpy(), expected, atol=1e-5)


def test_a_half_pixel_shift_keeps_more_of_a_strokes_edges_than_bilinear_would():
    """Why bicubic: a 3 px stroke moved by half a pixel. Bilinear shows the mean of two neighbours (edge pixels at
    0.5), which halves the stroke's edge energy (sum of squared neighbour differences: 2 -> 1); bicubic keeps
    1.428 of it (by hand: Keys' weights at distances 0.5 and 1.5 are 0.59375 and -0.09375, so the stroke reads
    -0.094, 0.5, 1.094, 1.094, 0.5, -0.094), with the same ink."""
    stroke = torch.zeros(1, 1, 1, 12)
    stroke[..., 4:7] = 1.0  # a stroke 3 px wide
    fields = identity_grid(1, 12) + torch.tensor([2 * 0.5 / 12, 0.0])  # every pixel reads half a pixel right
    frame = warp(stroke, fields[None, None])[0, 0, 0, 0]  # (12,)
    torch.testing.assert_close(
        frame[2:8], torch.tensor([-0.09375, 0.5, 1.09375, 1.09375, 0.5, -0.09375]), rtol=0, atol=1e-5
    )
    bilinear = 0.5 * (stroke[0, 0, 0, :-1] + stroke[0, 0, 0, 1:])  # pixel x shows the mean of x and x + 1

    def edge_energy(row: torch.Tensor) -> float:
        return float(row.diff().square().sum())

    assert float(frame.sum()) == pytest.approx(float(bilinear.sum()), abs=1e-5) == 3.0
    assert edge_energy(bilinear) == pytest.approx(1.0)
    assert edge_energy(frame) == pytest.approx(1.4277, abs=1e-4)  # 2 * 0.09375**2 + 4 * 0.59375**2


def test_flow_of_a_constant_velocity_translation_equals_the_velocity():
    velocity = torch.tensor([0.05, -0.125])  # normalized units per frame
    t = torch.arange(5, dtype=torch.float32)[:, None, None, None]  # (T, 1, 1, 1)
    fields = (identity_grid(4, 6) + t * velocity)[None]  # (1, 5, 4, 6, 2)
    flow = flow_from_fields(fields)
    assert flow.shape == (1, 4, 4, 6, 2)
    torch.testing.assert_close(flow, velocity.expand(1, 4, 4, 6, 2), rtol=0, atol=1e-6)


def test_warp_rejects_mismatched_shapes_with_a_clear_message():
    with pytest.raises(ValueError, match=r"canonical \(B, C, H, W\) and fields \(B, T, H, W, 2\)"):
        warp(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4, 2))
