"""Class labels on POST /generate, over HTTP against the production-mode deployment of `api_url`, whose `digits`
model is conditional (10 classes, 2 labels a video): what GET /models says of each model's classes, the 422s, the
labels a job records, a resample (and a render between frames) keeping them, and the Python client's `labels=`."""

from __future__ import annotations

import httpx
import pytest
import torch

from client.api import Client
from tests.e2e.test_jobs import fields_of, submit, succeeded

FRAMES = 4


def generate(http: httpx.Client, **body) -> dict:
    return submit(
        http, "/generate", json={"model": "digits", "seed": 4, "motion_seed": 5, "num_frames": FRAMES} | body
    )


def test_models_say_which_classes_a_video_is_made_of(http: httpx.Client):
    listed = {m["name"]: m for m in http.get("/models").json()}
    assert (
        listed["digits"]["classes"] == [str(c) for c in range(10)]
        and listed["digits"]["labels_per_video"] == 2
    )
    assert (listed["tiny"]["classes"], listed["tiny"]["labels_per_video"]) == ([], 0)
    assert listed["digits"]["trained_on"] == "nothing: random test weights"  # its config's `data`


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"labels": [3]},
            "model digits takes 2 distinct labels, each the index of one of its classes: 0, 1, 2",
        ),
        ({"labels": [3, 3]}, "takes 2 distinct labels"),
        ({"labels": [3, 10]}, "takes 2 distinct labels"),
        ({"labels": [-1, 3]}, "takes 2 distinct labels"),
        ({"labels": [3, 7], "model": "tiny"}, "model tiny is unconditional: it takes no labels"),
        ({"labels": []}, "at least 1 item"),
        ({"labels": ["3", "7"]}, "Input should be a valid integer"),
    ],
)
def test_labels_that_do_not_fit_the_model_are_a_422_naming_its_classes(http: httpx.Client, body, message):
    response = http.post("/generate", json={"model": "digits"} | body)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]  # one per item of labels that is not an integer
    assert error["loc"][:2] == ["body", "labels"] and message in error["msg"], error


def test_a_job_records_its_labels_and_a_resample_and_a_render_keep_them(http: httpx.Client):
    drawn, drawn_files = succeeded(http, generate(http)["id"])
    seeds = drawn["result"]["labels"]  # what seed 4 gives
    assert "labels" not in drawn["params"] and len(seeds) == 2
    asked = [c for c in range(10) if c not in seeds][:2]
    job = generate(http, labels=asked[::-1])
    assert job["params"]["labels"] == asked  # sorted
    job, files = succeeded(http, job["id"])
    assert job["result"]["labels"] == asked and files["canonical"] != drawn_files["canonical"]

    resample = submit(
        http, "/generate", json={"canonical_from": job["id"], "motion_seed": 9, "num_frames": FRAMES}
    )
    assert resample["params"]["labels"] == asked and resample["params"]["seed"] == 4
    resampled, resampled_files = succeeded(http, resample["id"])
    assert resampled["result"]["labels"] == asked and resampled_files["canonical"] == files["canonical"]
    # the same motion seed on the seed's own labels is other motion: the fields follow the canonical image's labels
    other = submit(
        http, "/generate", json={"canonical_from": drawn["id"], "motion_seed": 9, "num_frames": FRAMES}
    )
    _, other_files = succeeded(http, other["id"])
    assert not torch.equal(fields_of(other_files), fields_of(resampled_files))

    response = http.post("/generate", json={"canonical_from": job["id"], "labels": asked})
    assert response.status_code == 422 and "a resample keeps the canonical image" in response.text

    render = submit(http, "/render", data={"job_id": job["id"], "scale": "1", "fps_factor": "2"})
    assert render["params"]["motion"] == {"seed": 4, "labels": asked, "motion_seed": 5}
    _, rendered = succeeded(http, render["id"])
    assert torch.equal(fields_of(rendered)[::2], fields_of(files))  # the job's own frames, bit for bit


def test_the_python_client_asks_for_labels(api_url: str):
    with Client(api_url) as client:
        job = client.generate(seed=11, motion_seed=1, num_frames=2, model="digits", labels=(6, 2)).wait(
            timeout_s=60
        )
        assert job.result["labels"] == [2, 6] and job.doc["params"]["labels"] == [2, 6]
        assert job.canonical().shape == (32, 32, 3)
