"""The /decompose limits through the HTTP API: each refused with 413 and a message naming the limit (and the frame),
before anything is stored or queued. A frame larger than its header says is found while decoding, at that frame.
(The total of decoded pixels cannot be passed here: the API decodes at most GENDEF_MAX_FRAMES frames, each
within GENDEF_MAX_VIDEO_PIXELS; the worker tests pass it.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from tests.service.helpers import Server, make_settings
from tests.worker.video_checks import vp8_webm

LIMITS = dict(max_video_bytes=1024, max_video_pixels=16 * 16, max_video_frames=6, max_video_duration_s=1.0)


@pytest.mark.parametrize(
    ("video", "num_frames", "message"),
    [
        (b"\x1a\x45\xdf\xa3" + bytes(2000), 2, "video is larger than the limit of 1024 bytes"),
        (vp8_webm([(32, 2)]), 2, "video frames are 32x32 = 1024 pixels; the limit is 256"),
        (vp8_webm([(16, 3), (64, 3)]), 6, "frame 3 is 64x64 = 4096 pixels; the limit is 256"),
        (vp8_webm([(8, 8)], fps=60), 2, "video has more than 6 frames"),
        (vp8_webm([(8, 4)], fps=2), 2, "video lasts 2.0 s; the limit is 1.0 s"),
    ],
    ids=["bytes", "pixels-in-header", "pixels-of-a-later-frame", "frames", "duration"],
)
def test_each_video_limit_is_413_with_what_to_do(
    redis_db: redis.Redis, tmp_path: Path, video: bytes, num_frames: int, message: str
):
    with Server(make_settings(tmp_path, **LIMITS)) as server:
        r = httpx.post(
            f"{server.url}/decompose",
            files={"video": ("clip.webm", video, "video/webm")},
            data={"num_frames": str(num_frames)},
        )
    assert r.status_code == 413 and message in r.json()["detail"], r.text
    assert redis_db.keys("gendef:job:*") == [] and not (tmp_path / "artifacts" / "jobs").exists()


def test_a_clip_whose_frame_size_changes_is_422(redis_db: redis.Redis, tmp_path: Path):
    with Server(make_settings(tmp_path, **LIMITS)) as server:
        r = httpx.post(
            f"{server.url}/decompose",
            files={"video": ("clip.webm", vp8_webm([(8, 2), (16, 2)]), "video/webm")},
            data={"num_frames": "4"},
        )
    assert r.status_code == 422, r.text
    assert "frame 2 is 16x16 but frame 0 is 8x8" in r.json()["detail"] and "one size" in r.json()["detail"]
