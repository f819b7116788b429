"""The measures of a decomposition tell paint that rides on the content from paint that stays on the screen, and a
motion from a mosaic."""

import numpy as np
import torch
from skimage import data

from model.decomposition import measures
from model.warp import identity_grid

SIZE = (96, 128)


def photo_fields(maps: np.ndarray, photo_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 2): the true fields of a filmed photo, relative to the photo."""
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # (H, W, 3)
    px = np.einsum("tij,hwj->thwi", maps, points)[..., :2]  # (T, H, W, 2) photo pixels
    h, w = photo_hw
    return torch.from_numpy((2 * px + 1) / np.array([w, h]) - 1).float()


def test_paint_on_the_photo_rides_on_it_and_paint_on_the_screen_does_not() -> None:
    photo = data.coffee()[::2, ::2]
    frames, maps = measures.film(photo, 16, SIZE)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    fields = photo_fields(maps, photo.shape[:2], SIZE)
    centres = [(110.0 + 20 * i, 100.0) for i in range(4)]
    dots = measures.discs(photo.shape[:2], centres, 4.0)
    flow = measures.clip_flow(clip)

    on_photo = measures.render_mask(dots, fields)
    on_screen = np.repeat(on_photo[:1], len(frames), axis=0)

    assert measures.overlap(on_photo, flow) > 0.7
    assert measures.overlap(on_screen, flow) < measures.overlap(on_photo, flow) - 0.3
    assert measures.dot_like_share(on_photo, float(dots.sum()) / 4) > 0.9
    assert measures.fold_share(fields) == 0
    assert measures.affine_rms(fields, photo.shape[:2]) < 1e-4


def test_folds_and_departures_from_affine_are_measured() -> None:
    grid = identity_grid(*SIZE)[None]  # (1, H, W, 2)
    flipped = grid * torch.tensor([-1.0, 1.0])
    wavy = grid + torch.stack([0.05 * torch.sin(grid[..., 1] * 6), torch.zeros_like(grid[..., 1])], dim=-1)

    assert measures.fold_share(flipped) == 1
    assert measures.fold_share(torch.cat([grid, flipped])) == 0.5
    assert measures.affine_rms(wavy, SIZE) > 1.0  # 0.05 units are 3.2 px of amplitude


def test_a_streak_is_not_dot_like() -> None:
    masks = np.zeros((1, 40, 40), dtype=bool)
    masks[0, 5:10, 5:10] = True  # a dot of 25 px
    masks[0, 20:23, 5:25] = True  # a streak, 60 px, 20:3
    masks[0, 30:32, 30:32] = True  # a shard

    assert measures.dot_like_share(masks, 25.0) == 1 / 3
