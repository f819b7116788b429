"""core/video.py: the one decoder and encoder. Encoded mp4s are what browsers play (checked from the file's bytes
and with PyAV directly); decoding checks every frame against the limits as it arrives."""

import io
import tracemalloc

import av
import pytest
import torch

from core import video
from tests.worker.video_checks import decode_video, psnr, vp8_webm
from worker import media


def moving_square(num_frames: int, height: int, width: int) -> torch.Tensor:
    """A smooth gradient background with a white 8x8 square moving right by 2 pixels per frame."""
    ys = torch.linspace(-1, 1, height).view(height, 1).expand(height, width)
    xs = torch.linspace(-1, 1, width).view(1, width).expand(height, width)
    frames = torch.stack([xs, ys, -0.5 * xs.clone()], dim=0).repeat(num_frames, 1, 1, 1)  # (T, 3, H, W)
    for t in range(num_frames):
        frames[t, :, 4:12, 2 + 2 * t : 10 + 2 * t] = 1.0
    return frames


def test_video_is_browser_playable_h264_and_decodes_to_the_frames():
    frames = moving_square(8, 32, 48)
    data = media.encode_video(frames, fps=8)

    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat"), "moov atom must come first (+faststart)"
    assert b"crf=18.0" in data  # x264 writes its settings into the stream
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.format.name == "yuv420p"
        assert stream.frames == 8
    decoded, fps = decode_video(data)
    assert fps == 8
    assert decoded.shape == (8, 32, 48, 3)
    assert psnr(decoded, media.to_uint8(frames)) > 35
    # the square really moves: frame 3's square sits 6 pixels right of frame 0's
    assert decoded[3, 6:10, 10:14].mean() > 220 and decoded[0, 6:10, 10:14].mean() < 200


def test_video_of_odd_size_is_padded_by_edge_repeat():
    frames = moving_square(4, 31, 33)
    decoded, _ = decode_video(media.encode_video(frames, fps=5))
    assert decoded.shape == (4, 32, 34, 3)
    expected = media.to_uint8(frames)
    assert psnr(decoded[:, :31, :33], expected) > 35
    # the padded last row repeats row 30
    assert psnr(decoded[:, 31, :33], expected[:, 30]) > 30


def test_decode_refuses_non_video():
    with pytest.raises(video.VideoError):
        video.read(b"definitely not an mp4")


def test_first_frames_and_scaling():
    data = media.encode_video(moving_square(6, 32, 48), fps=8)
    clip = video.read(data, first=3, long_side=24)
    assert clip.frames.shape == (3, 16, 24, 3) and clip.fps == 8
    assert video.read(data, short_side=16).frames.shape == (6, 16, 24, 3)
    assert video.read(data, long_side=100).frames.shape == (6, 32, 48, 3)  # never upscaled


def test_a_long_upload_is_checked_frame_by_frame_without_keeping_its_frames():
    # what the API does before it queues a /decompose job of hundreds of full-size frames
    data = media.encode_video(moving_square(1, 240, 320).repeat(120, 1, 1, 1), fps=25)  # 27 MB decoded
    tracemalloc.start()
    assert video.check(data, first=100) == 100 and video.check(data) == 120
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 240 * 320 * 3, peak  # a few frames at a time, not the 100 or 120
    with pytest.raises(video.VideoTooLarge, match="more than 50 frames"):
        video.check(data, first=100, limits=video.Limits(max_frames=50))
    with pytest.raises(video.VideoError, match="cannot be decoded"):
        video.check(b"definitely not an mp4")


@pytest.mark.parametrize(
    ("limits", "message", "passed"),
    [
        (video.Limits(max_frames=4), "more than 4 frames", 4),
        (video.Limits(max_pixels=32 * 47), "frame 0 is 48x32", 0),
        (video.Limits(max_duration_s=0.3), "frame 3 is at 0.4 s", 3),
        (video.Limits(max_total_pixels=32 * 48 * 2), "frame 2 brings the decoded pixels", 2),
    ],
)
def test_each_limit_stops_decoding_at_the_first_frame_past_it(
    limits: video.Limits, message: str, passed: int
):
    data = media.encode_video(moving_square(6, 32, 48), fps=8)
    decoded = []
    with pytest.raises(video.VideoTooLarge, match=message):
        for frame, _ in video.frames(data, limits):
            decoded.append(frame)
    assert len(decoded) == passed


def test_a_frame_larger_than_the_header_says_stops_decoding_at_that_frame():
    data = vp8_webm([(16, 3), (64, 3)])  # frames 3-5: a keyframe of another size mid-stream
    limits = video.Limits(max_pixels=16 * 16)
    info = video.probe(data, limits)  # the header and packets pass: 16x16, 6 frames
    assert (info.container, info.width, info.height, info.frames) == ("webm", 16, 16, 6)
    decoded = []
    with pytest.raises(video.VideoTooLarge, match="frame 3 is 64x64 = 4096 pixels; the limit is 256"):
        for frame, _ in video.frames(data, limits):
            decoded.append(frame)
    assert [f.shape for f in decoded] == [(16, 16, 3)] * 3


def test_gif_round_trip():
    frames = media.to_uint8(moving_square(5, 24, 32))
    data = video.encode_gif(frames, fps=10)
    assert data[:6] == b"GIF89a"
    clip = video.read(data)
    assert clip.frames.shape == (5, 24, 32, 3) and clip.fps == 10
    assert psnr(clip.frames, frames) > 20  # an 8-bit palette
