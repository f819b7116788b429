"""Decomposition recovers a synthetic clip made by warping a known image with a known smooth field."""

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from model.decomposition.fit import (
    ATLAS_INTERPOLATION,
    DecomposeConfig,
    affine_departure,
    base_fields,
    canonical_size,
    decompose,
    fields_into_tile,
    fill_unseen,
    frame_groups,
    grouped,
    in_time,
    keyframes,
    lay_out,
    level_weights,
    levels_for,
    offsets_of,
    psnr,
    reconstruction_loss,
    render,
)
from model.decomposition.shots import find_cuts, shot_bounds
from model.decomposition.tracking import to_field_units, to_pixels
from model.decomposition.units import decompose_video
from model.warp import warp

H = W = 32
FRAMES = 6
MID = FRAMES // 2


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A 32 px problem: thread hand-offs cost more than they save, most of all on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def texture(size: int) -> torch.Tensor:
    """(3, size, size) smooth random image in [-1, 1] (blurred noise, fixed seed)."""
    noise = torch.rand(1, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def true_motion_px() -> torch.Tensor:
    """(T, H, W, 2) pixels: where pixel p of frame t sees the middle frame, minus p: a pan plus a sinusoidal
    ripple, zero at the middle frame."""
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    out = []
    for t in range(FRAMES):
        s = (t - MID) / MID
        dx = 2.0 * s + 0.8 * s * torch.sin(2 * math.pi * ys / H)
        dy = -1.0 * s + 0.6 * s * torch.cos(2 * math.pi * xs / W)
        out.append(torch.stack([dx, dy], dim=-1))
    return torch.stack(out)  # (T, H, W, 2)


def test_psnr_and_level_weights_by_hand() -> None:
    a = torch.zeros(1, 4)
    assert abs(psnr(a, a + 0.02) - 40.0) < 1e-5  # 10 log10(4 / 0.02 ** 2)
    assert level_weights(0, 100, 3, 0.5) == [1.0, 0.0, 0.0]
    assert level_weights(50, 100, 3, 0.5) == [1.0, 1.0, 1.0]
    assert abs(level_weights(25, 100, 3, 0.5)[1] - 1.0) < 1e-9 and level_weights(25, 100, 3, 0.5)[2] == 0.0


def test_affine_departure_is_zero_for_an_affine_residual_and_ignores_unweighted_points() -> None:
    xs, ys = torch.arange(12.0), torch.arange(8.0)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    affine = torch.stack([0.3 + 0.02 * gx - 0.01 * gy, -0.5 + 0.03 * gy], dim=-1)[None]  # (1, 8, 12, 2)
    bent = affine + torch.stack([0.01 * (gx - 5.5) ** 2, torch.zeros_like(gx)], dim=-1)
    weights = torch.ones(1, 8, 12)
    assert float(affine_departure(affine, weights, xs, ys)) < 1e-8
    assert float(affine_departure(bent, weights, xs, ys)) > 0.01
    # a bump where the weights are zero (what moves on its own) costs nothing
    bump = affine.clone()
    bump[0, 2:5, 3:6] += 2.0
    weights[0, 2:5, 3:6] = 0
    assert float(affine_departure(bump, weights, xs, ys)) < 1e-8


def test_base_fields_put_the_frame_in_the_canonical_centre() -> None:
    Hc, Wc = canonical_size(20, 40, 0.25)
    assert (Hc, Wc) == (30, 60)
    # Frame pixel (0, 0) is canonical pixel (10, 5): u = (2 * 10 + 1) / 60 - 1, v = (2 * 5 + 1) / 30 - 1.
    assert torch.allclose(base_fields(20, 40, (Hc, Wc))[0, 0], torch.tensor([21 / 60 - 1, 11 / 30 - 1]))


def test_decomposition_of_a_warped_image_recovers_frames_and_motion(one_thread: None) -> None:
    big = 48  # the known image is larger than the frames; frame pixel p shows its pixel p + 8 at the middle
    image = texture(big)
    motion = true_motion_px()  # (T, H, W, 2)
    xs, ys = torch.arange(W, dtype=torch.float32), torch.arange(H, dtype=torch.float32)
    pixels = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2): (x, y) of each pixel
    true_fields = to_field_units(pixels + 8 + motion, big, big)  # (T, H, W, 2) into the 48 px image
    frames = warp(image[None], true_fields[None], ATLAS_INTERPOLATION)[0]  # (T, 3, H, W)

    result = decompose(frames, DecomposeConfig(steps=200))

    Hc, Wc = result.canonical.shape[1:]
    assert result.fields.shape == (FRAMES, H, W, 2)
    assert result.psnr_db >= 30.0
    # The stored pair follows the convention: grid_sample(canonical, fields) is the reconstruction it reports.
    stored = warp(result.canonical[None], result.fields[None], ATLAS_INTERPOLATION)[0]
    assert abs(psnr(stored, frames) - result.psnr_db) < 1e-6
    # Motion relative to the middle frame, in pixels (1 canonical px = 1 frame px), away from the borders where
    # content came in from outside the middle frame.
    scale = torch.tensor([Wc / 2, Hc / 2])
    fitted = (result.fields - result.fields[MID]) * scale  # (T, H, W, 2) px
    error = (fitted - motion)[:, 4:-4, 4:-4].norm(dim=-1)
    still = motion[:, 4:-4, 4:-4].norm(dim=-1)
    assert error.mean() < 0.35, (error.mean(), still.mean())
    assert still.mean() > 1.0  # the bound is far below the motion itself


def warped_shot(seed: int, pan: float) -> torch.Tensor:
    """(FRAMES, 3, H, W): a 48 px smooth image of `seed`, seen through a 32 px window that pans `pan` px a frame
    and ripples (true_motion_px)."""
    noise = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    image = F.interpolate(noise, size=(48, 48), mode="bicubic", align_corners=False)[0].clamp(-1, 1)
    xs, ys = torch.arange(W, dtype=torch.float32), torch.arange(H, dtype=torch.float32)
    pixels = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
    motion = true_motion_px() * torch.tensor([pan / 2, 1.0])
    return warp(image[None], to_field_units(pixels + 8 + motion, 48, 48)[None], ATLAS_INTERPOLATION)[0]


def test_a_clip_with_a_cut_is_split_there_and_each_shot_recovered(one_thread: None) -> None:
    clip = torch.cat([warped_shot(3, 1.0), warped_shot(11, -1.5)])  # a cut at frame FRAMES
    assert find_cuts(clip) == [FRAMES]
    assert find_cuts(clip[:FRAMES]) == [] and find_cuts(clip[FRAMES:]) == []

    seen = []
    result = decompose_video(
        clip, DecomposeConfig(steps=200), on_progress=lambda *a: seen.append(a), report_every=100
    )

    shots = result.shots
    assert [(s["start"], s["frames"]) for s in shots] == [(0, FRAMES), (FRAMES, FRAMES)]
    assert [(s["shot"], s["segment"], s["reason"]) for s in shots] == [(0, 0, "start"), (1, 0, "cut")]
    assert all(s["psnr_db"] >= 30.0 for s in shots), shots
    assert [(unit, units, step) for unit, units, step, _ in seen] == [
        (0, 2, 100),
        (0, 2, 200),
        (1, 2, 100),
        (1, 2, 200),
    ]
    # One image holds both shots' canonical images side by side; grid_sample(it, fields) is the whole clip, and
    # each shot's frames read only its own tile's columns: the same frames as from those columns alone.
    Ha, Wa = result.canonical.shape[1:]
    assert [s["x"] for s in shots] == [0, shots[0]["width"]]
    assert Wa == sum(s["width"] for s in shots)
    assert all(s["width"] > W and Ha > H for s in shots)  # each holds its panning frames
    assert result.fields.shape == (2 * FRAMES, H, W, 2)
    frames = warp(result.canonical[None], result.fields[None], ATLAS_INTERPOLATION)[0]
    assert abs(psnr(frames, clip) - result.psnr_db) < 1e-4  # per-frame errors averaged: float rounding apart
    for shot in shots:
        x, width, start, end = shot["x"], shot["width"], shot["start"], shot["start"] + shot["frames"]
        tile = result.canonical[:, :, x : x + width]
        pixels = to_pixels(result.fields[start:end], Ha, Wa) - torch.tensor([x, 0])
        own = to_field_units(pixels, Ha, width)  # the same points, relative to the tile's columns
        alone = warp(tile[None], own[None], ATLAS_INTERPOLATION)[0]
        torch.testing.assert_close(alone, frames[start:end], rtol=0, atol=1e-5)


def test_fast_motion_is_no_cut() -> None:
    pan = torch.cat([warped_shot(3, 1.0), warped_shot(3, 1.0).flip(0)])  # fast, and back: one shot
    flash = torch.cat([pan[:6], pan[6:] * 0.2])  # a sudden change of light is one
    assert find_cuts(pan) == []
    assert find_cuts(flash) == [6]
    assert shot_bounds(12, [6]) == [(0, 6), (6, 12)] and shot_bounds(5, []) == [(0, 5)]


def test_fields_into_tile_reproduce_border_padding_of_the_tile() -> None:
    tile = texture(16)[:, :12]  # (3, 12, 16): lower than its neighbours
    fields = torch.rand(2, 8, 8, 2, generator=torch.Generator().manual_seed(1)) * 3 - 1.5  # also far outside
    alone = warp(tile[None], fields[None], ATLAS_INTERPOLATION)[0]
    atlas, columns = lay_out([torch.zeros(3, 20, 10), tile, torch.ones(3, 16, 16)])  # the tile in the middle
    assert atlas.shape == (3, 20, 42) and columns == [0, 10, 26]
    inside = warp(atlas[None], fields_into_tile(fields, 10, (12, 16), (20, 42))[None], ATLAS_INTERPOLATION)[0]
    torch.testing.assert_close(inside, alone, rtol=0, atol=1e-5)


def test_canonical_pixels_no_frame_reads_are_filled_from_their_nearest_seen_pixel() -> None:
    canonical = torch.zeros(3, 8, 8)
    canonical[:, :, ::2] = torch.linspace(-1, 1, 4)  # the columns the frames read: 0, 2, 4, 6
    canonical[:, :, 1::2] = 0.9  # never read: what a fit would leave there
    xs = torch.tensor([0.0, 2.0, 4.0, 6.0])  # frame pixel x reads canonical column 2x, every row
    fields = to_field_units(torch.stack(torch.meshgrid(xs, torch.arange(8.0), indexing="xy"), dim=-1), 8, 8)[
        None
    ]
    filled = fill_unseen(canonical, fields)
    torch.testing.assert_close(filled[:, :, ::2], canonical[:, :, ::2])  # seen: kept
    between = filled[:, :, 1:6:2]  # each takes a nearest seen neighbour's value: left or right
    assert ((between == canonical[:, :, 0:5:2]) | (between == canonical[:, :, 2:7:2])).all()
    torch.testing.assert_close(filled[:, :, 7], canonical[:, :, 6])  # the edge: its one seen neighbour
    torch.testing.assert_close(
        warp(filled[None], fields[None], ATLAS_INTERPOLATION),
        warp(canonical[None], fields[None], ATLAS_INTERPOLATION),
    )


def test_coarse_levels_hold_keyframes_and_are_linear_between_them() -> None:
    assert [keyframes(T, 8) for T in (1, 2, 9, 10, 64)] == [1, 2, 2, 3, 9]
    assert keyframes(64, 1) == 64
    # keyframes at frames 0, 4, 8 (9 frames, 3 keyframes): values 0, 4, 2 -> linear between them
    grid = torch.tensor([0.0, 4.0, 2.0])[:, None, None, None].expand(3, 2, 1, 1)
    out = in_time(grid, 9)
    assert out.shape == (9, 2, 1, 1)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 3.5, 3.0, 2.5, 2.0]))
    assert torch.equal(out[:, 0], out[:, 1])
    assert in_time(grid, 3) is grid  # one grid per frame already


def test_finer_field_levels_come_with_more_pixels() -> None:
    config = DecomposeConfig()
    assert levels_for(config, 32) == levels_for(config, 128) == (4, 8, 16, 32, 64)
    assert levels_for(config, 256) == (4, 8, 16, 32, 64, 128)  # a cell of 2 pixels, as 64 cells at 128 px
    assert levels_for(config, 512) == (4, 8, 16, 32, 64, 128, 256)


def test_a_photo_filmed_by_a_moving_camera_is_found_as_the_photo_and_paint_rides_on_it(
    one_thread: None,
) -> None:
    """The issue's camera clip, small: the canonical image is the photo, the fields its affine views, and painted
    discs follow the clip's own motion as discs painted on the photo would."""
    from skimage import data

    from core import video
    from model.decomposition import measures
    from worker.media import from_uint8

    photo = data.coffee()[::3, ::3]  # (134, 200, 3): a frame is 96 px wide, the pan one frame width
    shot, maps = measures.film(photo, 16, (72, 96), pan=1.0, zoom=1.3, roll_deg=4.0)
    frames = from_uint8(video.read(video.encode_mp4(shot, 25)).frames)  # through mp4, as uploads are

    result = decompose(frames, DecomposeConfig(steps=120))

    hw = tuple(result.canonical.shape[1:])
    assert hw[1] > 1.7 * 96  # a panorama: the frames and the pan
    assert result.psnr_db >= 30.0
    # 28.8 dB at this size (33.2 at 256 px in benchmarks/decompose.py --edits; the method before: 12.8 here)
    assert measures.photo_psnr(result.canonical, result.fields, photo, maps, 8) >= 27.0
    assert measures.fold_share(result.fields) <= 0.01
    assert measures.affine_rms(result.fields, hw) <= 0.5  # 0.25 (0.29 without the affine term)
    dots = [(15.0 + 16 * i, 20.0 + 30 * j) for i in range(5) for j in range(2)]  # middle-frame pixels
    masks = measures.render_mask(
        measures.discs(hw, measures.canonical_points(result.fields, hw, dots, 8), 3.0), result.fields
    )
    assert measures.overlap(masks, measures.clip_flow(frames)) >= 0.7
    assert measures.dot_like_share(masks, math.pi * 9) >= 0.8


def test_the_levels_summed_as_keyframes_are_the_levels_brought_to_every_frame_then_summed() -> None:
    """offsets_of upsamples each level while it is keyframes and brings each stride's sum to every frame once: the
    same offsets as each level brought to every frame, upsampled and summed (the order of two linear
    interpolations on different axes does not matter)."""
    g = torch.Generator().manual_seed(0)
    T, H, W = 19, 24, 40
    config = DecomposeConfig()
    sizes = levels_for(config, W)
    strides = [*config.time_strides, *[1] * len(sizes)][: len(sizes)]
    grids = [
        torch.randn(keyframes(T, stride), 2, max(2, round(size * H / W)), size, generator=g)
        for size, stride in zip(sizes, strides, strict=True)
    ]
    weights = [1.0, 0.7, 0.3, 0.0, 1.0][: len(grids)] + [1.0] * (len(grids) - 5)
    finest = grids[-1].shape[2:]
    expected = sum(
        w * F.interpolate(in_time(grid, T), size=finest, mode="bilinear", align_corners=False)
        for grid, w in zip(grids, weights, strict=True)
        if w > 0
    )  # (T, 2, h, w)
    scale = torch.tensor([0.5, 2.0])
    full, on_grid = offsets_of(grids, weights, H, W, scale)
    torch.testing.assert_close(on_grid, expected.permute(0, 2, 3, 1), rtol=0, atol=1e-5)
    upsampled = F.interpolate(expected, size=(H, W), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(full, upsampled * scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_fit_is_the_same_for_the_same_frames(threads: int) -> None:
    """Deterministic for the same input on the same device and thread count (API.md): the frames are rendered in
    one grid_sample batch item per thread (fit.render), each with its own gradient of the canonical image, summed in
    a fixed order; what reaches the fit from OpenCV (the camera, the flow) is deterministic too."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        clip = torch.cat([warped_shot(5, 1.0), warped_shot(5, 1.0).flip(0)])  # 12 frames: 2 items of 6 frames
        first, second = (decompose(clip, DecomposeConfig(steps=20)) for _ in range(2))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(first.canonical, second.canonical) and torch.equal(first.fields, second.fields)
    assert first.psnr_db == second.psnr_db


def test_the_fits_reconstruction_terms_and_render_are_the_plain_ones() -> None:
    """reconstruction_loss (its gradient written out) is MSE + grad_weight x the MSE of neighbouring pixels'
    differences, value and gradient; render is warp's frames, in groups of whole frames, with the same gradients."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(6, 3, 10, 14, generator=g) * 2 - 1
    recon = (frames + 0.3 * torch.randn(6, 3, 10, 14, generator=g)).requires_grad_(True)
    plain = (recon - frames).square().mean() + 0.1 * (
        (recon.diff(dim=3) - frames.diff(dim=3)).square().mean()
        + (recon.diff(dim=2) - frames.diff(dim=2)).square().mean()
    )
    (expected,) = torch.autograd.grad(3 * plain, recon)
    fused = reconstruction_loss(recon, frames, 0.1)
    (got,) = torch.autograd.grad(3 * fused, recon)
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(got, expected)

    canonical = (torch.rand(3, 16, 20, generator=g) * 2 - 1).requires_grad_(True)
    fields = (torch.rand(6, 10, 14, 2, generator=g) * 2.2 - 1.1).requires_grad_(True)
    weights = torch.randn(6, 3, 10, 14, generator=g)
    frames_warp = warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0]
    grads_warp = torch.autograd.grad((frames_warp * weights).sum(), [canonical, fields])
    for groups in (1, 2, 3):
        out = render(canonical, fields, groups)  # (groups, 3, 6 / groups, 10, 14)
        torch.testing.assert_close(out, grouped(frames_warp, groups), rtol=0, atol=0)
        grads = torch.autograd.grad((out * grouped(weights, groups)).sum(), [canonical, fields])
        for a, b in zip(grads, grads_warp, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert [frame_groups(t) for t in (1, 6, 9, 7, 12)] == [1, 3, 3, 1, 4]
    finally:
        torch.set_num_threads(threads)
