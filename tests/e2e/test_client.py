"""The Python client (client/api.py) against the production-mode deployment of `api_url`: its arrays are the
artifacts' contents, each job kind has its method, and a POST whose answer is lost is retried into the same job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from client.api import Client, Job, RequestRefused

FRAMES = 4


@pytest.fixture(scope="module")
def client(api_url: str):
    with Client(api_url) as client:
        yield client


@pytest.fixture(scope="module")
def generated(client: Client) -> Job:
    return client.generate(seed=11, motion_seed=12, num_frames=FRAMES).wait()


def test_wait_reports_progress_until_the_job_has_succeeded(client: Client) -> None:
    seen = []
    job = client.generate(seed=1, num_frames=2)
    assert job.wait(on_progress=lambda j: seen.append((j.status, j.progress)), poll_s=0.05) is job
    assert seen[-1] == ("succeeded", 1.0)
    assert all(status in ("queued", "running", "succeeded") for status, _ in seen)
    assert [p for _, p in seen] == sorted(p for _, p in seen)


def test_arrays_equal_the_downloaded_artifacts(generated: Job, tmp_path: Path) -> None:
    paths = generated.download_all(tmp_path)
    assert sorted(p.name for p in paths) == ["canonical.png", "deformation.npz", "video.mp4"]

    canonical = generated.canonical()
    with Image.open(tmp_path / "canonical.png") as png:
        assert canonical.dtype == np.uint8 and np.array_equal(canonical, np.asarray(png.convert("RGB")))
    H, W, _ = canonical.shape

    fields, meta = generated.fields()
    with np.load(tmp_path / "deformation.npz") as npz:
        assert np.array_equal(fields, npz["fields"])
        assert meta == json.loads(str(npz["meta"]))
    assert fields.dtype == np.float32 and fields.shape == (FRAMES, H, W, 2)
    assert (meta["job_id"], meta["seed"], meta["motion_seed"]) == (generated.id, 11, 12)

    frames = generated.frames()
    with av.open(str(tmp_path / "video.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.dtype == np.uint8 and frames.shape == (FRAMES, H, W, 3)
    assert np.array_equal(frames, decoded)


def test_edit_track_and_segment_take_arrays_and_give_arrays(
    client: Client, generated: Job, tmp_path: Path
) -> None:
    painted = generated.canonical()
    painted[: painted.shape[0] // 2] = (250, 20, 10)
    edit = client.edit(generated.id, painted).wait()
    assert (edit.kind, edit.doc["parent_id"]) == ("edit", generated.id)
    assert np.array_equal(
        edit.canonical(), painted
    )  # PNG is lossless: the edit's canonical is the array sent

    track = client.track(edit.id, [[1, 2], [3.5, 4]], frame=1).wait()
    tracks = track.tracks()
    assert len(tracks) == FRAMES and [len(frame) for frame in tracks] == [2] * FRAMES
    assert tracks == json.loads(track.download("tracks", tmp_path / "t.json").read_text())

    mask = np.zeros(painted.shape[:2], dtype=np.uint8)
    mask[: mask.shape[0] // 2] = 3
    segment = client.segment(generated.id, mask).wait()
    masks = segment.masks()
    with np.load(segment.download("masks", tmp_path / "m.npz")) as npz:
        assert np.array_equal(masks, npz["masks"])
    assert masks.shape == (FRAMES, *mask.shape) and (masks == 3).any()


def test_resample_keeps_the_content_with_new_motion(client: Client, generated: Job) -> None:
    resampled = client.resample(generated.id, motion_seed=99).wait()
    assert (resampled.kind, resampled.doc["params"]["seed"]) == ("resample", 11)
    assert np.array_equal(resampled.canonical(), generated.canonical())
    assert not np.array_equal(resampled.fields().fields, generated.fields().fields)


class Network(httpx.BaseTransport):
    """Sends every request on and keeps it in `sent`; the answers to the first `lose` POSTs, once the API has
    acted on them, are lost on the way back (kept in `lost`)."""

    def __init__(self, lose: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose
        self.sent: list[httpx.Request] = []
        self.lost: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if request.method == "POST" and len(self.lost) < self.lose:
            response.read()
            self.lost.append(response)
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def test_a_post_whose_answer_is_lost_is_retried_into_the_same_job(api_url: str) -> None:
    transport = Network(lose=1)
    with Client(api_url, transport=transport) as client:
        job = client.generate(seed=5, num_frames=2)
    (lost,) = transport.lost
    first, retry = transport.sent
    assert lost.status_code == 202 and job.id == lost.json()["id"]
    assert retry.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]

    # The retry was answered from the first attempt's record: one job.
    with Client(api_url) as client:
        again = client.request(
            "POST",
            "/generate",
            json={"seed": 5, "num_frames": 2},
            headers={"Idempotency-Key": first.headers["Idempotency-Key"]},
        )
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == job.id


def test_each_call_gets_its_own_idempotency_key_and_the_api_key(
    api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENDEF_API_KEY", "key-from-env")
    transport = Network()
    with Client(api_url, transport=transport) as client:
        a, b = client.generate(seed=6, num_frames=2), client.generate(seed=6, num_frames=2)
        a.wait()
        a.fetch("video")
    assert a.id != b.id
    posts = [r for r in transport.sent if r.method == "POST"]
    assert len({r.headers["Idempotency-Key"] for r in posts}) == 2
    api = [
        r
        for r in transport.sent
        if r.url.host == "127.0.0.1" and r.url.path.startswith(("/generate", "/jobs"))
    ]
    assert api and all(r.headers["Authorization"] == "Bearer key-from-env" for r in api)
    (download,) = [r for r in transport.sent if r.url.path.endswith("/video.mp4")]
    assert "Authorization" not in download.headers  # the presigned URL is the only credential the store gets
    with Client(api_url, api_key="explicit", transport=transport) as client:
        client.get(a.id)
    assert transport.sent[-1].headers["Authorization"] == "Bearer explicit"


def test_a_refused_request_raises_with_the_apis_message(client: Client) -> None:
    with pytest.raises(RequestRefused) as refused:
        client.track("0" * 32, [[1, 1]])
    assert refused.value.status_code == 404 and "0" * 32 in str(refused.value)


def test_decompose_of_a_clip(client: Client, tmp_path: Path) -> None:
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    for t in range(3):
        frames[t, 4:10, 2 + 2 * t : 8 + 2 * t] = (200, 50, 30)
    images = [Image.fromarray(f) for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=100)
    (tmp_path / "clip.gif").write_bytes(out.getvalue())
    job = client.decompose(tmp_path / "clip.gif", num_frames=3, resolution=16, steps=10, fps=5).wait()
    fields, meta = job.fields()
    assert job.kind == "decompose" and fields.shape == (3, 16, 16, 2)
    assert meta["psnr_db"] == pytest.approx(job.result["psnr_db"])
    assert job.canonical().shape == (meta["canonical_height"], meta["canonical_width"], 3)
