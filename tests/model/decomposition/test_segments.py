"""Segments of a long shot: how a shot is split, where the video switches from one segment's tile to the next."""

import pytest
import torch

from model.decomposition.segments import OVERLAP, carry, owned, split, switch_frame


@pytest.mark.parametrize("frames", [12, 64, 65, 100, 129, 600, 1000])
@pytest.mark.parametrize("max_frames", [12, 16, 64])
def test_a_shot_is_split_into_the_fewest_segments_that_share_overlap_frames(
    frames: int, max_frames: int
) -> None:
    parts = split(10, 10 + frames, max_frames)

    assert parts[0][0] == 10 and parts[-1][1] == 10 + frames
    assert all(end - start <= max_frames for start, end in parts)
    assert all(a[1] - b[0] == OVERLAP for a, b in zip(parts[:-1], parts[1:], strict=True))
    lengths = [end - start for start, end in parts]
    assert max(lengths) - min(lengths) <= 1  # as even as whole frames allow
    if len(parts) > 1:  # one segment less could not hold the frames: each after the first adds max - OVERLAP
        assert frames > max_frames + (len(parts) - 2) * (max_frames - OVERLAP)


def test_a_short_shot_is_one_segment_and_too_short_segments_are_refused() -> None:
    assert split(3, 40, 64) == [(3, 40)]
    with pytest.raises(ValueError, match="too short"):
        split(0, 100, 3 * OVERLAP - 1)


def test_the_switch_makes_the_smallest_change_from_one_frame_to_the_next() -> None:
    # the earlier tile's renders of the frame before the overlap and the shared ones; the later tile's of the
    # shared ones and the frame after: the change at switch i is between earlier[i] and later[i]
    earlier = torch.rand(OVERLAP + 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    change = torch.full((OVERLAP + 1, 1, 1, 1), 0.2)
    change[3] = 0.01
    assert switch_frame(earlier, earlier + change) == 3
    assert switch_frame(earlier, earlier + 0.1) == OVERLAP // 2  # all alike: the middle of the overlap


def test_every_frame_is_shown_by_one_segment() -> None:
    ranges = [(0, 0, 20), (0, 16, 36), (0, 32, 50), (1, 50, 60)]  # shot 0 in three segments, then shot 1
    assert owned(ranges, [18, 33]) == [(0, 18), (18, 33), (33, 50), (50, 60)]
    assert owned(ranges, [20, 32]) == [(0, 20), (20, 32), (32, 50), (50, 60)]  # the overlap's two ends
    with pytest.raises(ValueError, match="not shared"):
        owned(ranges, [21, 33])


def to_units(x: torch.Tensor, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)


def test_paint_is_carried_to_the_next_tile_where_the_shared_frame_sees_it() -> None:
    Hc, Wc, H, W = 20, 60, 10, 16  # two tiles of 30 columns; a 16 x 10 frame seen in both
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    seen_by = to_units(xs + 5, ys + 4, Hc, Wc)  # frame pixel (x, y) is tile 0's (x + 5, y + 4)
    lands_at = to_units(30 + xs + 8, ys + 3, Hc, Wc)  # ... and tile 1's (x + 8, y + 3)
    painted = torch.rand(3, Hc, Wc, generator=torch.Generator().manual_seed(1)) * 2 - 1
    paint = torch.zeros(Hc, Wc)
    painted[:, 6:9, 8:12] = torch.tensor([0.5, -0.25, 0.75])[:, None, None]  # painted on tile 0
    paint[6:9, 8:12] = 1
    paint[0:2, 0:3] = 1  # outside what the frame sees of tile 0: it stays there

    colour, coverage = carry(painted, paint, seen_by, lands_at, (30, 60))

    expected = torch.zeros(Hc, Wc)
    expected[5:8, 41:45] = 1
    assert torch.allclose(coverage, expected, atol=1e-6)
    assert torch.allclose(colour[:, 5:8, 41:45], painted[:, 6:9, 8:12], atol=1e-6)
    assert torch.allclose((colour * coverage)[:, expected == 0], torch.zeros(1), atol=1e-5)  # only the paint
