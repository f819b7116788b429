"""A shot's panorama holds all its frames under the camera's motion, starts as the scene without what passes
through it, and a shot that sweeps too far is split into segments whose panoramas fit."""

import torch

from model.decomposition import panorama
from model.decomposition.segments import OVERLAP
from model.warp import warp


def pan(frames: int, pixels_per_frame: float) -> torch.Tensor:
    """(T, 3, 3) maps of a camera panning right at a constant speed, relative to the middle frame."""
    maps = torch.eye(3, dtype=torch.float64).repeat(frames, 1, 1)
    maps[:, 0, 2] = (torch.arange(frames) - frames // 2) * pixels_per_frame
    return maps


def test_the_panorama_holds_every_frame_and_the_fields_follow_the_camera() -> None:
    H, W = 20, 40
    maps = pan(9, 5.0)  # 40 px of pan: the frames span two frame widths
    pano = panorama.layout(maps, H, W, margin=0.25)

    assert (pano.height, pano.width) == (30, 100)  # 20 + 2 * 5, 80 + 2 * 10
    fields = panorama.base_fields(pano, H, W)  # (T, H, W, 2)
    x = (fields[..., 0] + 1) * pano.width / 2 - 0.5  # canonical pixels
    assert abs(float(x.min()) - 10) < 1e-4 and abs(float(x.max()) - 89) < 1e-4  # all inside, margins free
    torch.testing.assert_close(
        x[1:] - x[:-1], torch.full_like(x[1:], 5.0), atol=1e-4, rtol=0
    )  # the pan, in canonical pixels


def test_the_median_start_shows_the_scene_without_what_passes() -> None:
    H, W = 16, 24
    scene = torch.linspace(-1, 1, 40).repeat(3, H, 1)  # (3, 16, 40): a horizontal ramp, wider than a frame
    maps = pan(9, 2.0)
    pano = panorama.layout(maps, H, W, margin=0.0)
    fields = panorama.base_fields(pano, H, W)
    frames = warp(scene[None, :, :, 0 : pano.width], fields[None], "bilinear")[0]  # (T, 3, H, W)
    frames[3, :, 4:10, 4:10] = 1.0  # something passing, in one frame

    start = panorama.median(frames, pano)

    torch.testing.assert_close(start, scene[:, :, : pano.width], atol=1e-5, rtol=0)


def test_a_shot_that_sweeps_too_far_is_split_into_segments_whose_panoramas_fit() -> None:
    H, W = 20, 40
    maps = pan(60, 4.0)  # 236 px of pan: about 7 frames wide
    spans = panorama.split(maps, H, W, max_area=3.0, max_frames=64)

    assert spans[0][0] == 0 and spans[-1][1] == 60 and len(spans) > 1
    assert all(a[1] - b[0] >= OVERLAP for a, b in zip(spans[:-1], spans[1:], strict=True))
    for start, end in spans:
        middle = torch.linalg.inv(maps[(start + end) // 2])
        assert panorama.area_ratio(middle @ maps[start:end], H, W) <= 3.0
    assert panorama.split(maps[:12], H, W, max_area=4.0, max_frames=64) == [(0, 12)]
