"""The camera's motion is found: a photo filmed by a camera that pans, zooms and rolls (measures.film), through an
mp4, gives back each frame's map to the middle frame within a fraction of a pixel, and a still camera none."""

import numpy as np
import pytest
import torch
from skimage import data

from core import video
from model.decomposition import camera, measures
from worker.media import from_uint8

SIZE = (96, 128)  # (H, W)


def corner_error(estimated: np.ndarray, truth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T,) the largest distance in pixels between where two sets of maps (T, 3, 3) put a frame's corners."""
    H, W = size
    corners = np.array([[0, 0, 1], [W - 1, 0, 1], [0, H - 1, 1], [W - 1, H - 1, 1]], dtype=np.float64).T
    out = []
    for e, t in zip(estimated, truth, strict=True):
        a, b = e @ corners, t @ corners
        out.append(np.abs(a[:2] / a[2] - b[:2] / b[2]).max())
    return np.array(out)


@pytest.mark.parametrize("model", ["affine", "homography"])
def test_a_camera_that_pans_zooms_and_rolls_is_found_within_a_pixel(model: str) -> None:
    photo = data.coffee()[::2, ::2]  # (200, 300, 3): a frame is 128 px wide, the pan one frame width
    frames, maps = measures.film(photo, 24, SIZE, pan=1.0, zoom=1.3, roll_deg=4.0)
    clip = from_uint8(
        video.read(video.encode_mp4(frames, 25)).frames
    )  # (T, 3, H, W), through mp4 as uploads are

    estimated = camera.estimate(clip, camera.CameraConfig(model=model)).numpy()

    middle = len(frames) // 2
    truth = np.stack([np.linalg.inv(maps[middle]) @ m for m in maps])
    np.testing.assert_allclose(estimated[middle], np.eye(3), atol=1e-9)
    # a homography's two more degrees of freedom fit the mp4's noise a little too
    assert corner_error(estimated, truth, SIZE).max() < (1.0 if model == "affine" else 1.5)
    assert camera.estimate(clip, camera.CameraConfig(model=model)).equal(torch.from_numpy(estimated))


def test_a_still_camera_over_a_moving_object_is_still() -> None:
    photo = data.coffee()[: SIZE[0], : SIZE[1]]
    frames = np.repeat(photo[None], 12, axis=0).copy()
    for t, f in enumerate(frames):  # a bright square crossing a third of the frame
        f[30:50, 20 + 3 * t : 40 + 3 * t] = 255
    estimated = camera.estimate(from_uint8(frames)).numpy()

    assert corner_error(estimated, np.repeat(np.eye(3)[None], 12, axis=0), SIZE).max() < 1.0


def test_apply_maps_points() -> None:
    maps = torch.tensor([[[2.0, 0, 1], [0, 2, -1], [0, 0, 1]], [[1, 0, 0], [0, 1, 0], [0, 0, 2]]])
    points = torch.tensor([[[1.0, 1.0]]])  # (1, 1, 2)

    assert camera.apply(maps, points).tolist() == [[[[3.0, 1.0]]], [[[0.5, 0.5]]]]
