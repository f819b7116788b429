"""Segments of a long shot: how a shot is split, where the video switches from one segment's tile to the next."""

import pytest
import torch

from model.decomposition.segments import OVERLAP, owned, split, switch_frame


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
