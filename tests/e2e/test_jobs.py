"""What users do (the README's session, steps 1-5) over plain HTTP against the production-mode deployment of `api_url`:
artifacts fetched from their presigned URLs and checked against grid_sample(canonical, fields) computed here."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.e2e.conftest import BUCKET, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from tests.worker.video_checks import MIN_PSNR_DB, decode_video, video_psnr, warp
from worker import media

FRAMES = 8
FINAL = {"succeeded", "failed", "canceled"}


def wait_done(http: httpx.Client, job_id: str, timeout_s: float = 60) -> tuple[dict, list[float]]:
    """Poll GET /jobs/{id} until the job is final: (its document, the progress values seen on the way)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        seen.append(job["progress"])
        if job["status"] in FINAL:
            return job, seen
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s} s"
        time.sleep(0.02)


def submit(http: httpx.Client, path: str, **kwargs) -> dict:
    response = http.post(path, **kwargs)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def succeeded(http: httpx.Client, job_id: str) -> tuple[dict, dict[str, bytes]]:
    """Wait for the job, check it succeeded, download its artifacts with a plain client (no API base URL)."""
    job, _ = wait_done(http, job_id)
    assert job["status"] == "succeeded", job["error"]
    files = {}
    for name, artifact in job["artifacts"].items():
        response = httpx.get(artifact["url"], timeout=30)
        assert response.status_code == 200, (name, response.text)
        assert len(response.content) == artifact["bytes"]
        files[name] = response.content
    return job, files


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def fields_of(files: dict[str, bytes]) -> torch.Tensor:
    return media.decode_fields(files["deformation"])[0]  # (T, H, W, 2)


def mode_of(files: dict[str, bytes]) -> str:
    """grid_sample's mode the fields' meta names (API.md: deformation.npz)."""
    return media.decode_fields(files["deformation"])[1]["interpolation"]


@pytest.fixture(scope="module")
def generated(api_url: str) -> tuple[dict, dict[str, bytes], list[float]]:
    """Scenarios 1-2: POST /generate, poll to success: the document, its artifacts, the progress values seen."""
    with httpx.Client(base_url=api_url, timeout=30) as http:
        job = submit(http, "/generate", json={"seed": 1, "motion_seed": 2, "num_frames": FRAMES})
        assert (job["kind"], job["status"], job["params"]["fps"]) == ("generate", "queued", 8)
        _, seen = wait_done(http, job["id"])
        job, files = succeeded(http, job["id"])
    return job, files, seen


def test_generate_delivers_the_canonical_warped_by_the_fields(generated):
    job, files, seen = generated
    assert seen == sorted(seen) and seen[-1] == 1.0, seen
    assert set(files) == {"video", "canonical", "deformation"}
    assert job["artifacts"]["video"]["content_type"] == "video/mp4"
    assert job["artifacts"]["canonical"]["content_type"] == "image/png"

    frames, fps = decode_video(files["video"])
    assert frames.shape == (FRAMES, 32, 32, 3) and fps == 8
    fields, meta = media.decode_fields(files["deformation"])
    assert fields.shape == (FRAMES, 32, 32, 2)
    assert (meta["seed"], meta["motion_seed"], meta["num_frames"]) == (1, 2, FRAMES)
    assert meta["interpolation"] == "bicubic"
    warped, still = video_psnr(files["video"], files["canonical"], files["deformation"])
    assert warped > MIN_PSNR_DB and still < warped - 5


def test_edit_carries_the_paint_into_every_frame(http, generated):
    parent, parent_files, _ = generated
    painted = np.asarray(Image.open(io.BytesIO(parent_files["canonical"]))).copy()
    painted[8:20, 8:20] = (255, 0, 0)
    job = submit(http, "/edit", data={"job_id": parent["id"]}, files={"image": ("edited.png", png(painted))})
    assert (job["kind"], job["parent_id"], job["params"]["resized"]) == ("edit", parent["id"], False)

    job, files = succeeded(http, job["id"])
    assert files["deformation"] == parent_files["deformation"]  # the parent's fields, byte for byte
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["canonical"]))), painted)
    fields = fields_of(files)
    warped, _ = video_psnr(files["video"], files["canonical"], files["deformation"])
    assert warped > MIN_PSNR_DB
    # every frame is red where the warped square lands
    square = torch.zeros(3, 32, 32)
    square[:, 8:20, 8:20] = 1.0
    inside = warp(square, fields, mode_of(files))[:, 0] > 0.99  # (T, H, W)
    frames, _ = decode_video(files["video"])
    for t in range(FRAMES):
        assert inside[t].sum() > 20
        red = frames[t][inside[t].numpy()].mean(axis=0)
        assert red[0] > 180 and red[1] < 90 and red[2] < 90, (t, red)


def test_resample_keeps_the_canonical_and_draws_new_motion(http, generated):
    parent, parent_files, _ = generated
    job = submit(
        http, "/generate", json={"canonical_from": parent["id"], "motion_seed": 7, "num_frames": FRAMES}
    )
    assert (job["kind"], job["parent_id"], job["params"]["seed"]) == ("resample", parent["id"], 1)

    job, files = succeeded(http, job["id"])
    assert files["canonical"] == parent_files["canonical"]  # byte for byte
    assert not torch.equal(fields_of(files), fields_of(parent_files))
    warped, still = video_psnr(files["video"], files["canonical"], files["deformation"])
    assert warped > MIN_PSNR_DB and still < warped - 5


def test_same_seeds_give_identical_canonical_and_fields(http, generated):
    _, first, _ = generated
    job = submit(http, "/generate", json={"seed": 1, "motion_seed": 2, "num_frames": FRAMES})
    _, again = succeeded(http, job["id"])
    assert again["canonical"] == first["canonical"]
    assert torch.equal(fields_of(again), fields_of(first))


def test_six_jobs_at_once_succeed_and_a_queued_job_can_be_canceled(http):
    body = {"motion_seed": 3, "num_frames": 64}  # long enough that the jobs behind wait in the queue a while
    with ThreadPoolExecutor(6) as pool:
        jobs = list(
            pool.map(lambda seed: submit(http, "/generate", json=body | {"seed": seed}), range(10, 16))
        )
    # two more behind those six on a one-process worker: one to cancel, one to edit too early
    late, waiting = (submit(http, "/generate", json=body | {"seed": seed}) for seed in (16, 17))

    response = http.post(f"/jobs/{late['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    image = {"image": ("e.png", png(np.zeros((32, 32, 3), np.uint8)))}
    for unfinished, status in ((late, "canceled"), (waiting, "queued")):
        response = http.post("/edit", data={"job_id": unfinished["id"]}, files=image)
        assert response.status_code == 409, response.text
        assert f"is {status}, not succeeded" in response.json()["detail"]

    videos = [succeeded(http, job["id"])[1]["video"] for job in [*jobs, waiting]]
    assert len({job["id"] for job in jobs}) == 6 and len(set(videos)) == 7
    canceled, _ = wait_done(http, late["id"])
    assert canceled["status"] == "canceled" and canceled["artifacts"] == {} and canceled["started_at"] is None


def bomb_png() -> bytes:
    """A small file that decodes to more pixels than the deployment accepts."""
    side = int(MAX_UPLOAD_PIXELS**0.5) + 64
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, format="PNG")
    assert len(out.getvalue()) < MAX_UPLOAD_BYTES
    return out.getvalue()


def test_bad_requests_get_a_clear_4xx_at_once_and_the_service_keeps_working(http, generated):
    parent_id = generated[0]["id"]
    good_png = png(np.zeros((32, 32, 3), np.uint8))

    def edit(data: bytes, name: str = "e.png") -> httpx.Response:
        return http.post("/edit", data={"job_id": parent_id}, files={"image": (name, data)})

    bad = {
        "unknown job": (lambda: http.get("/jobs/no-such-job"), {404}),
        "cancel unknown job": (lambda: http.post("/jobs/no-such-job/cancel"), {404}),
        "zero frames": (lambda: http.post("/generate", json={"num_frames": 0}), {422}),
        "too many frames": (lambda: http.post("/generate", json={"num_frames": 100_000}), {422}),
        "seed of the wrong type": (lambda: http.post("/generate", json={"seed": "one"}), {422}),
        "frames of the wrong type": (lambda: http.post("/generate", json={"num_frames": 2.5}), {422}),
        "not JSON": (
            lambda: http.post("/generate", content=b"{", headers={"content-type": "application/json"}),
            {422},
        ),
        "resample of unknown job": (lambda: http.post("/generate", json={"canonical_from": "nope"}), {404}),
        "edit of unknown job": (
            lambda: http.post("/edit", data={"job_id": "nope"}, files={"image": ("e.png", good_png)}),
            {404},
        ),
        "edit without image": (lambda: http.post("/edit", data={"job_id": parent_id}), {422}),
        "non-image upload": (lambda: edit(b"just some text, not a picture", "e.txt"), {415, 422}),
        "truncated PNG": (lambda: edit(good_png[: len(good_png) // 2]), {415, 422}),
        "oversized upload": (lambda: edit(b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES + 1)), {413}),
        "decompression bomb": (lambda: edit(bomb_png()), {413, 422}),
    }
    for what, (call, expected) in bad.items():
        start = time.monotonic()
        response = call()
        elapsed = time.monotonic() - start
        assert response.status_code in expected, (what, response.status_code, response.text)
        assert response.json()["detail"], what
        assert elapsed < 1.0, (what, elapsed)

    assert http.get("/readyz").status_code == 200
    job = submit(http, "/generate", json={"seed": 2, "motion_seed": 2, "num_frames": FRAMES})
    succeeded(http, job["id"])


def test_an_edit_whose_source_fields_are_gone_fails_clearly_and_the_worker_goes_on(http, s3):
    source = submit(http, "/generate", json={"seed": 4, "motion_seed": 4, "num_frames": FRAMES})
    succeeded(http, source["id"])
    s3.delete_object(
        Bucket=BUCKET, Key=f"jobs/{source['id']}/deformation.npz"
    )  # e.g. a bucket lifecycle rule

    job = submit(
        http,
        "/edit",
        data={"job_id": source["id"]},
        files={"image": ("e.png", png(np.zeros((32, 32, 3), np.uint8)))},
    )
    job, _ = wait_done(http, job["id"])
    assert job["status"] == "failed" and job["artifacts"] == {}
    assert job["error"]["code"] == "parent_missing" and source["id"] in job["error"]["message"]
    inputs = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/input/")
    assert inputs["KeyCount"] == 1  # a failed job keeps its input

    after = submit(http, "/generate", json={"seed": 5, "motion_seed": 5, "num_frames": FRAMES})
    succeeded(http, after["id"])
