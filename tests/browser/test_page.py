"""The page at / in headless Chromium against the e2e deployment: generate, watch the video play, paint a stroke on
the canonical image, submit it as an edit, see the edited video; resample with one click; track picked points and
propagate a painted mask; a clip with a cut decomposed, its shots' canonical images side by side, rendered at
twice the size; API errors shown; a phone-width layout that does not scroll sideways; with API keys on,
the key entered on the page, kept for the tab, and sent on every call (events streamed, the canonical image
fetched)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from core import video
from tests.browser.conftest import API_KEY
from tests.model.decomposition.test_fit import warped_shot
from worker import media

JOB_TIMEOUT_MS = 120_000
PLAYING = "([t0]) => document.getElementById('video').currentTime > t0 + 0.05"


def wait_succeeded(page: Page, kind: str) -> str:
    """Wait until the page shows a succeeded job of this kind; its id."""
    expect(page.locator("#job-kind")).to_have_text(kind, timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    return page.locator("#job-id").inner_text()


def wait_playing(page: Page, job_id: str) -> None:
    """The video element shows this job's video and its currentTime advances."""
    page.wait_for_function(
        f"document.getElementById('video').currentSrc.includes('{job_id}')", timeout=JOB_TIMEOUT_MS
    )
    start = page.evaluate("document.getElementById('video').currentTime")
    page.wait_for_function(PLAYING, arg=[min(start, 0.5)], timeout=JOB_TIMEOUT_MS)  # it loops: a wrap is fine


def canonical(api_url: str, job_id: str) -> np.ndarray:
    response = httpx.get(f"{api_url}/jobs/{job_id}/canonical.png", timeout=30)
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_generate_play_paint_edit_resample(browser: Browser, api_url: str, artifacts_dir: Path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(api_url + "/")
    page.fill("#seed", "21")
    page.fill("#motion-seed", "22")
    page.fill("#num-frames", "8")
    page.click("#generate")
    source_id = wait_succeeded(page, "generate")
    wait_playing(page, source_id)
    expect(page.locator("#downloads a")).to_have_count(3)

    # paint a red horizontal stroke through the middle of the canonical image
    page.wait_for_function("document.getElementById('base').width > 0")
    box = page.locator("#paint").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.1, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, y, steps=10)
    page.mouse.up()
    page.click("#submit-edit")
    edit_id = wait_succeeded(page, "edit")
    assert edit_id != source_id
    wait_playing(page, edit_id)
    page.screenshot(path=artifacts_dir / "browser-edit.png", full_page=True)

    before, after = canonical(api_url, source_id), canonical(api_url, edit_id)
    size = before.shape[0]
    middle = after[size // 2, size // 5 : 4 * size // 5]  # (W', 3) the painted row
    assert (middle == [255, 0, 0]).all(), middle
    assert (after[: size // 4] == before[: size // 4]).all()  # far from the stroke: untouched

    page.click("#resample")
    resample_id = wait_succeeded(page, "resample")
    wait_playing(page, resample_id)
    assert (canonical(api_url, resample_id) == after).all()  # same (edited) content, new motion

    # tracks: pick two points on the canonical image, track them; the tracks video plays
    page.wait_for_function("document.getElementById('base').width > 0")
    box = page.locator("#paint").bounding_box()
    page.check("#pick")
    for fx, fy in ((0.3, 0.3), (0.6, 0.7)):
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.click("#track")
    track_id = wait_succeeded(page, "track")
    wait_playing(page, track_id)
    tracks = json.loads(httpx.get(artifact_url(api_url, track_id, "tracks"), timeout=30).content)
    assert len(tracks) == 8 and all(len(frame) == 2 for frame in tracks)
    picked = httpx.get(f"{api_url}/jobs/{track_id}", timeout=30).json()["params"]["points"]
    expected = [[fx * size - 0.5, fy * size - 0.5] for fx, fy in ((0.3, 0.3), (0.6, 0.7))]  # canonical pixels
    assert np.abs(np.array(picked) - expected).max() < 1, picked
    # masks: paint an area (pick unticked), segment it; labels propagate to every frame
    page.uncheck("#pick")
    page.click("#clear")
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    page.click("#segment")
    segment_id = wait_succeeded(page, "segment")
    wait_playing(page, segment_id)
    masks = np.load(io.BytesIO(httpx.get(artifact_url(api_url, segment_id, "masks"), timeout=30).content))[
        "masks"
    ]
    assert masks.shape[0] == 8 and set(np.unique(masks)) == {0, 1}
    page.close()


def test_the_model_picker_generates_with_the_model_picked(browser: Browser, api_url: str):
    models = {m["name"]: m for m in httpx.get(f"{api_url}/models", timeout=30).json()}
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(api_url + "/")
    expect(page.locator("#model option")).to_have_count(len(models))
    expect(page.locator("#model")).to_have_value("tiny")  # the default is preselected
    page.select_option("#model", "tiny64")
    page.fill("#num-frames", "8")  # 1 s at 8 fps, as the other tests: a 0.5 s clip may sit past the check
    page.click("#generate")
    job_id = wait_succeeded(page, "generate")
    wait_playing(page, job_id)
    expect(page.locator("#made-by")).to_have_text(f"model tiny64, version {models['tiny64']['version']}")
    assert canonical(api_url, job_id).shape == (64, 64, 3)
    page.close()


def test_a_conditional_model_offers_its_classes_and_generates_the_ones_picked(
    browser: Browser, api_url: str, artifacts_dir: Path
):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(api_url + "/")
    expect(page.locator("#model option")).to_have_count(3)
    expect(page.locator("#labels")).to_be_hidden()  # tiny, the default, is unconditional
    page.select_option("#model", "digits")
    expect(page.locator("#labels")).to_be_visible()
    expect(page.locator("#label-choices input")).to_have_count(10)
    expect(page.locator("#labels legend")).to_have_text("Labels: pick 2, or none for the seed's")
    page.check("#label-choices input[value='3']")
    page.check("#label-choices input[value='7']")
    page.fill("#num-frames", "8")
    page.click("#generate")
    job_id = wait_succeeded(page, "generate")
    wait_playing(page, job_id)
    expect(page.locator("#made-by")).to_contain_text("labels 3, 7")
    assert httpx.get(f"{api_url}/jobs/{job_id}", timeout=30).json()["params"]["labels"] == [3, 7]
    page.screenshot(path=artifacts_dir / "browser-labels.png", full_page=True)
    page.check("#label-choices input[value='5']")  # three: the API's message is shown
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text("takes 2 distinct labels")
    page.select_option("#model", "tiny")
    expect(page.locator("#labels")).to_be_hidden()
    page.close()


def artifact_url(api_url: str, job_id: str, name: str) -> str:
    url = httpx.get(f"{api_url}/jobs/{job_id}", timeout=30).json()["artifacts"][name]["url"]
    return url if url.startswith("http") else f"{api_url}/{url.lstrip('/')}"


def test_api_errors_are_shown_and_a_phone_width_fits(browser: Browser, api_url: str, artifacts_dir: Path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(api_url + "/")
    page.fill("#num-frames", "100000")
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text(
        "num_frames: Input should be less than or equal to", timeout=30_000
    )
    page.fill("#num-frames", "4")
    page.click("#random")
    wait_playing(page, wait_succeeded(page, "generate"))
    expect(page.locator("#error")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    page.screenshot(path=artifacts_dir / "browser-phone.png", full_page=True)
    page.close()


def test_with_api_keys_the_key_entered_on_the_page_is_used_for_every_call(
    browser: Browser, keyed_api_url: str
):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(keyed_api_url + "/")
    page.fill("#num-frames", "4")
    page.click("#random")
    expect(page.locator("#error")).to_contain_text("needs a valid API key", timeout=30_000)

    page.fill("#api-key", API_KEY)
    page.reload()  # kept for the tab
    expect(page.locator("#api-key")).to_have_value(API_KEY)
    assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab
    page.fill("#num-frames", "4")
    page.click("#random")
    source_id = wait_succeeded(page, "generate")  # progress and the end came over the authorized event stream
    wait_playing(page, source_id)
    page.wait_for_function(
        "document.getElementById('base').width > 0"
    )  # the canonical image, fetched with the key
    expect(page.locator("#error")).to_be_hidden()
    page.click("#submit-edit")
    wait_playing(page, wait_succeeded(page, "edit"))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    job = httpx.get(f"{keyed_api_url}/jobs/{source_id}", headers=headers, timeout=30).json()
    assert job["status"] == "succeeded"
    assert httpx.get(f"{keyed_api_url}/jobs/{source_id}", timeout=30).status_code == 401
    page.close()


def test_a_clip_with_a_cut_shows_its_shots_side_by_side_and_renders_at_twice_the_size(
    browser: Browser, api_url: str, tmp_path: Path
):
    clip = tmp_path / "cut.mp4"
    frames = torch.cat([warped_shot(3, 1.0), warped_shot(11, -1.5)])  # two 6-frame shots, 32 x 32
    clip.write_bytes(video.encode_mp4(media.to_uint8(frames), 8))
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(api_url + "/")
    page.set_input_files("#clip", str(clip))
    page.fill("#clip-frames", "12")
    page.fill("#clip-resolution", "32")
    page.click("#decompose")
    clip_id = wait_succeeded(page, "decompose")
    wait_playing(page, clip_id)
    expect(page.locator("#shots")).to_contain_text("2 shots")
    shots = httpx.get(f"{api_url}/jobs/{clip_id}", timeout=30).json()["result"]["shots"]
    page.wait_for_function("document.getElementById('base').width > 0")
    assert len(shots) == 2 and shots[1]["x"] == shots[0]["width"]  # side by side, each tile its own width
    assert page.evaluate("document.getElementById('base').width") == shots[1]["x"] + shots[1]["width"]

    page.click("#render-2x")
    render_id = wait_succeeded(page, "render")
    wait_playing(page, render_id)
    assert page.evaluate("document.getElementById('video').videoWidth") == 64
    page.close()
