"""Several models side by side on the e2e deployment: GET /models, a model per job, versions recorded and checked,
models loaded on demand within GENDEF_MAX_LOADED_MODELS, a model removed or retrained under queued work."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from tests.e2e.conftest import consumer_paused
from tests.e2e.test_jobs import fields_of, submit, succeeded, wait_done

FRAMES = 4


def generate(http: httpx.Client, model: str | None = None, **body) -> dict:
    return submit(
        http, "/generate", json={"seed": 5, "motion_seed": 6, "num_frames": FRAMES, "model": model} | body
    )


def models(http: httpx.Client) -> dict[str, dict]:
    response = http.get("/models")
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()}


@pytest.fixture
def extra_model(models_dir: Path) -> Iterator[Callable]:
    """extra_model(name, source) copies a served model's folder under another name; removed after the test."""
    made: list[Path] = []

    def make(name: str, source: str = "tiny") -> str:
        shutil.copytree(models_dir / source, models_dir / name)
        made.append(models_dir / name)
        return name

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def test_both_models_are_listed_with_distinct_versions(http):
    listed = models(http)
    tiny, wide = listed["tiny"], listed["tiny64"]
    assert tiny["version"] != wide["version"] and re.fullmatch(r"[0-9a-f]{12}", tiny["version"])
    assert (tiny["resolution"], wide["resolution"]) == (32, 64)
    assert tiny["max_frames"] == wide["max_frames"] == 128  # GENDEF_MAX_FRAMES below the models' 256
    assert tiny["default"] and not wide["default"]
    assert wide["trained_on"] == "nothing: random test weights" and tiny["trained_on"] is None


def test_each_model_makes_videos_of_its_resolution_deterministically_per_version(http):
    listed = models(http)
    for name in ("tiny", "tiny64"):
        job, files = succeeded(http, generate(http, name)["id"])
        assert job["params"]["model"] == name and job["params"]["version"] == listed[name]["version"]
        size = listed[name]["resolution"]
        assert Image.open(io.BytesIO(files["canonical"])).size == (size, size)
        assert fields_of(files).shape == (FRAMES, size, size, 2)
        _, again = succeeded(http, generate(http, name)["id"])
        assert again["canonical"] == files["canonical"] and torch.equal(fields_of(again), fields_of(files))
    default = generate(http)  # no model: the default
    assert default["params"]["model"] == "tiny"


def test_an_unknown_model_is_a_422_naming_the_choices(http):
    response = http.post("/generate", json={"model": "nope"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "model"] and "tiny, tiny64" in error["msg"]


def test_edit_track_and_resample_inherit_the_model_and_version(http):
    parent, files = succeeded(http, generate(http, "tiny64")["id"])
    made_by = {k: parent["params"][k] for k in ("model", "version")}
    edit = submit(
        http, "/edit", data={"job_id": parent["id"]}, files={"image": ("c.png", files["canonical"])}
    )
    track = submit(http, "/track", json={"job_id": parent["id"], "points": [[3, 4]]})
    resample = submit(http, "/generate", json={"canonical_from": parent["id"], "num_frames": FRAMES})
    for job in (edit, track, resample):
        done, _ = succeeded(http, job["id"])
        assert {k: done["params"][k] for k in made_by} == made_by, done["kind"]
    response = http.post("/generate", json={"canonical_from": parent["id"], "model": "tiny"})
    assert response.status_code == 422 and "tiny64" in response.text


def test_a_resample_of_a_version_no_longer_served_is_a_409(http, models_dir, extra_model):
    name = extra_model("retrained")
    parent, files = succeeded(http, generate(http, name)["id"])
    shutil.copy(models_dir / "tiny64" / "model.safetensors", models_dir / name / "model.safetensors")
    assert models(http)[name]["version"] != parent["params"]["version"]
    response = http.post("/generate", json={"canonical_from": parent["id"]})
    assert response.status_code == 409
    assert parent["params"]["version"] in response.json()["detail"]
    # an edit uses the stored fields, not the model: still accepted
    submit(http, "/edit", data={"job_id": parent["id"]}, files={"image": ("c.png", files["canonical"])})


def loaded_models(log: Path) -> list[str]:
    """The worker's loaded set as its latest `models loaded:` line says, least recently used first."""
    lines = re.findall(r"models loaded: (.*)", log.read_text())
    return [entry.split("@")[0] for entry in lines[-1].split(", ")]


def test_at_most_two_models_stay_loaded_the_least_recently_used_goes(http, e2e_logs, extra_model):
    third = extra_model("third")
    for name in ("tiny", "tiny64", third):
        succeeded(http, generate(http, name)["id"])
    assert loaded_models(e2e_logs / "worker.log") == ["tiny64", third]


def test_a_model_removed_while_its_job_is_queued_fails_that_job_and_the_worker_goes_on(
    http, models_dir, extra_model, queues
):
    name = extra_model("doomed")
    with consumer_paused(queues["GENDEF_GENERATE_QUEUE"]):  # the worker stops taking generate jobs
        job = generate(http, name)
        shutil.rmtree(models_dir / name)
    done, _ = wait_done(http, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "model_unavailable"
    assert name in done["error"]["message"]
    succeeded(http, generate(http, "tiny")["id"])
