"""Rendering beyond the fields' grid: more pixels (fields upsampled, the canonical upscaled or replaced) and more
frames (fields interpolated within shots); the source frames are always reproduced exactly."""

import torch
import torch.nn.functional as F

from model.decomposition.fit import base_fields
from model.decomposition.upsampling import (
    frame_times,
    interpolate_fields,
    upsample_fields,
    upscale_image,
    warp_upsampled,
)
from model.warp import identity_grid, warp


def smooth_fields(T: int, H: int, W: int) -> torch.Tensor:
    """(T, H, W, 2): a pan and a zoom (affine) plus a smooth random ripple."""
    ripple = F.interpolate(
        torch.randn(T, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.05,
        size=(H, W),
        mode="bicubic",
        align_corners=False,
    ).permute(0, 2, 3, 1)
    return identity_grid(H, W) * 0.8 + torch.tensor([0.1, -0.05]) + ripple


def test_upsampled_fields_are_exact_for_affine_fields_and_interpolate_the_rest() -> None:
    affine = base_fields(6, 8, (8, 10))[None] + torch.tensor([0.1, -0.05])  # a decomposed clip's still frame
    torch.testing.assert_close(
        upsample_fields(affine, 4), base_fields(24, 32, (32, 40))[None] + torch.tensor([0.1, -0.05])
    )
    fields = smooth_fields(2, 12, 16)
    up = upsample_fields(fields, 2)
    # Away from the border the field is bilinear between the source pixel centres: grid_sample it there.
    at = F.grid_sample(
        fields.permute(0, 3, 1, 2), identity_grid(24, 32)[None].expand(2, -1, -1, -1), align_corners=False
    )
    torch.testing.assert_close(up[:, 1:-1, 1:-1], at.permute(0, 2, 3, 1)[:, 1:-1, 1:-1], rtol=0, atol=1e-6)


def test_a_render_at_twice_the_size_is_the_upscaled_canonical_warped_by_the_upsampled_fields() -> None:
    canonical = torch.rand(3, 14, 18, generator=torch.Generator().manual_seed(2)) * 2 - 1
    fields = smooth_fields(3, 12, 16)
    big = upscale_image(canonical, 2)
    frames = warp_upsampled(big, fields, 2)  # (T, 3, 24, 32)
    assert frames.shape == (3, 3, 24, 32)
    torch.testing.assert_close(frames, warp(big[None], upsample_fields(fields, 2)[None])[0].clamp(-1, 1))
    # and it is the source video, seen sharper: averaged back down it is close to the source frames
    small = F.avg_pool2d(frames, 2)
    assert (small - warp(canonical[None], fields[None])[0]).abs().mean() < 0.1
    # A canonical image painted at four times the size renders at its own detail (any size works).
    painted = torch.zeros(3, 56, 72)
    painted[:, 20:22] = 1.0  # a line two pixels thick at 4x: a half pixel at the source size
    torch.testing.assert_close(
        warp_upsampled(painted, fields, 1), warp(painted[None], fields[None])[0].clamp(-1, 1)
    )
    assert warp_upsampled(painted, fields, 4).amax() == 1.0  # the thin line reaches full intensity somewhere


def test_twice_the_frame_rate_reproduces_the_even_frames_exactly_and_never_blends_across_a_cut() -> None:
    fields = smooth_fields(5, 6, 8)
    out = interpolate_fields(fields, 2, [(0, 2), (2, 5)])
    assert out.shape == (10, 6, 8, 2) and frame_times(5, 2)[3] == 1.5
    assert torch.equal(out[::2], fields)
    torch.testing.assert_close(out[5], (fields[2] + fields[3]) / 2)
    assert torch.equal(out[3], fields[1])  # after the last frame of the first shot: held, not blended with 2
    assert torch.equal(out[9], fields[4])
    assert torch.equal(interpolate_fields(fields, 1, [(0, 5)]), fields)
