"""The tasks' job logic, run in-process against the machine's Redis (db 12) and a local artifact folder.

The Celery plumbing around it (a real worker process) is covered by tests/e2e.
"""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.jobs import JobRecord, new_job_id
from core.settings import Settings
from core.storage import input_key
from model.checkpoint import load_checkpoint
from model.inference import prepare
from tests.redis_server import redis_url
from tests.worker.video_checks import MIN_PSNR_DB, decode_video, psnr, video_psnr, warp, yuv420
from worker import media
from worker.runtime import Runtime
from worker.tasks import run_job

REDIS_DB = 12  # record keys are random job ids: nothing to flush


def make_settings(tmp_path, models_dir, **overrides) -> Settings:
    values = dict(
        redis_url=redis_url(REDIS_DB),
        storage_backend="local",
        local_storage_dir=tmp_path / "artifacts",
        models_dir=models_dir,
        device="cpu",
        url_secret="s" * 32,
    )
    return Settings(**(values | overrides))


@pytest.fixture
def rt(tmp_path, tiny_checkpoint) -> Runtime:
    return Runtime(make_settings(tmp_path, tiny_checkpoint.parent))


def blob(rt: Runtime, job: JobRecord, name: str) -> bytes:
    return rt.blobs.get(job.artifacts[name].key)


def run(rt: Runtime, kind: str, params: dict, **create) -> JobRecord:
    job = rt.jobs.create(kind, params, **create)
    run_job(rt, job.id, kind)
    return rt.jobs.get(job.id)


def generate(rt: Runtime, seed: int = 1, motion_seed: int = 2, num_frames: int = 8) -> JobRecord:
    job = run(rt, "generate", {"seed": seed, "motion_seed": motion_seed, "num_frames": num_frames, "fps": 8})
    assert job.status == "succeeded", job.error
    return job


def upload(rt: Runtime, job_id: str, image: Image.Image, fmt: str = "PNG") -> dict[str, str]:
    out = io.BytesIO()
    image.save(out, format=fmt)
    key = input_key(job_id, "image." + fmt.lower())
    rt.blobs.put(key, out.getvalue(), f"image/{fmt.lower()}")
    return {"image": key}


def edit(rt: Runtime, parent: JobRecord, image: Image.Image, fmt: str = "PNG") -> JobRecord:
    job_id = new_job_id()
    return run(
        rt, "edit", {"fps": 8}, parent_id=parent.id, inputs=upload(rt, job_id, image, fmt), job_id=job_id
    )


def test_generate_stores_the_models_sample_as_png_npz_and_mp4(rt, tiny_checkpoint):
    job = generate(rt, seed=3, motion_seed=4, num_frames=8)

    assert job.progress == 1.0 and job.attempts == 1 and job.error is None
    assert {name: a.key for name, a in job.artifacts.items()} == {
        "canonical": f"jobs/{job.id}/canonical.png",
        "deformation": f"jobs/{job.id}/deformation.npz",
        "video": f"jobs/{job.id}/video.mp4",
    }
    assert job.artifacts["video"].content_type == "video/mp4"
    assert job.artifacts["canonical"].bytes == len(blob(rt, job, "canonical"))

    expected = prepare(load_checkpoint(tiny_checkpoint)).sample(
        [3], [4], 8
    )  # the worker's inference settings
    canonical, _ = media.decode_image(blob(rt, job, "canonical"))
    assert np.array_equal(media.to_uint8(canonical), media.to_uint8(expected.canonical[0]))
    fields, meta = media.decode_fields(blob(rt, job, "deformation"))
    assert torch.equal(fields, expected.fields[0])
    assert (meta["seed"], meta["motion_seed"], meta["num_frames"], meta["height"], meta["width"]) == (
        3,
        4,
        8,
        32,
        32,
    )
    assert "align_corners=False" in meta["convention"] and meta["model"] == "tiny"
    assert meta["interpolation"] == "bicubic"  # the model's frames (model/warp.py)

    warped, still = video_psnr(
        blob(rt, job, "video"), blob(rt, job, "canonical"), blob(rt, job, "deformation")
    )
    assert warped > MIN_PSNR_DB and still < warped - 5


def test_same_seeds_give_identical_artifacts(rt):
    a, b = generate(rt, seed=7, motion_seed=8), generate(rt, seed=7, motion_seed=8)
    assert a.id != b.id
    assert blob(rt, a, "canonical") == blob(rt, b, "canonical")
    fa, fb = (
        media.decode_fields(blob(rt, a, "deformation"))[0],
        media.decode_fields(blob(rt, b, "deformation"))[0],
    )
    assert torch.equal(fa, fb)
    other = generate(rt, seed=7, motion_seed=9)
    assert not torch.equal(fa, media.decode_fields(blob(rt, other, "deformation"))[0])


def test_redelivered_job_overwrites_its_artifacts_and_a_finished_one_is_skipped(rt):
    job = rt.jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8})
    rt.jobs.mark_running(job.id)  # a first attempt whose worker died mid-job
    assert run_job(rt, job.id, "generate") == "succeeded"
    done = rt.jobs.get(job.id)
    assert done.attempts == 2
    files = sorted(p.name for p in (rt.settings.local_storage_dir / "jobs" / job.id).iterdir())
    assert files == ["canonical.png", "deformation.npz", "video.mp4"]

    assert run_job(rt, job.id, "generate") is None  # delivered once more after success: nothing happens
    assert rt.jobs.get(job.id) == done


def test_resample_keeps_the_canonical_bytes_and_samples_new_motion(rt, tiny_checkpoint):
    parent = generate(rt, seed=5, motion_seed=6)
    job = run(rt, "resample", {"seed": 5, "motion_seed": 60, "num_frames": 8, "fps": 8}, parent_id=parent.id)

    assert job.status == "succeeded", job.error
    assert blob(rt, job, "canonical") == blob(rt, parent, "canonical")
    fields, meta = media.decode_fields(blob(rt, job, "deformation"))
    assert torch.equal(fields, prepare(load_checkpoint(tiny_checkpoint)).sample_motion([5], [60], 8)[0])
    assert not torch.equal(fields, media.decode_fields(blob(rt, parent, "deformation"))[0])
    assert meta["canonical_from"] == parent.id and meta["motion_seed"] == 60
    warped, still = video_psnr(
        blob(rt, job, "video"), blob(rt, job, "canonical"), blob(rt, job, "deformation")
    )
    assert warped > MIN_PSNR_DB and still < warped - 5


def test_edit_warps_the_upload_by_the_parents_fields_without_the_model(tmp_path, rt):
    parent = generate(rt)
    canonical = np.asarray(Image.open(io.BytesIO(blob(rt, parent, "canonical"))))
    painted = canonical.copy()
    painted[8:20, 8:20] = (255, 0, 0)  # a red square painted on the canonical image

    # a worker without models: edit must not need one
    no_model = Runtime(make_settings(tmp_path, tmp_path / "no-models"))
    job = edit(no_model, parent, Image.fromarray(painted))

    assert job.status == "succeeded", job.error
    assert not no_model.loaded_models()
    assert blob(rt, job, "deformation") == blob(rt, parent, "deformation")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(blob(rt, job, "canonical")))), painted)
    fields, _ = media.decode_fields(blob(rt, job, "deformation"))
    warped, _ = video_psnr(blob(rt, job, "video"), blob(rt, job, "canonical"), blob(rt, job, "deformation"))
    assert warped > MIN_PSNR_DB
    # the edit is in the video: it differs from the parent's where the square went
    edited_frames, _ = decode_video(blob(rt, job, "video"))
    parent_frames, _ = decode_video(blob(rt, parent, "video"))
    assert (edited_frames[..., 0].astype(int) - parent_frames[..., 0]).max() > 100


def test_an_edit_of_fields_stored_before_bicubic_reads_them_as_their_video_was_made(rt):
    """A deformation.npz without meta["interpolation"] (written before 2026-12-06) was rendered bilinear: its edit
    is too, so a stored job's edit looks as its video did (docs/API.md)."""
    parent = generate(rt)
    fields, meta = media.decode_fields(blob(rt, parent, "deformation"))
    del meta["interpolation"]
    legacy = parent.artifacts["deformation"]
    rt.blobs.put(legacy.key, media.encode_fields(fields, meta), legacy.content_type)
    stripes = np.zeros((32, 32, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: where the two modes differ most
    job = edit(rt, parent, Image.fromarray(stripes))
    assert job.status == "succeeded", job.error
    decoded, _ = decode_video(blob(rt, job, "video"))
    image = media.from_uint8(stripes)
    bilinear, bicubic = (
        yuv420(media.to_uint8(warp(image, fields, mode))) for mode in ("bilinear", "bicubic")
    )
    assert psnr(decoded, bilinear) > psnr(decoded, bicubic) + 3


def test_edit_resizes_an_upload_of_another_size(rt):
    parent = generate(rt)
    job = edit(rt, parent, Image.new("RGB", (50, 70), (0, 0, 255)), fmt="JPEG")
    assert job.status == "succeeded", job.error
    with Image.open(io.BytesIO(blob(rt, job, "canonical"))) as image:
        assert image.size == (32, 32)
        assert np.abs(np.asarray(image).astype(int) - (0, 0, 255)).max() < 8


def test_edit_of_an_undecodable_upload_fails_as_invalid_input_and_keeps_it(rt):
    parent = generate(rt)
    job_id = new_job_id()
    key = input_key(job_id, "image.png")
    rt.blobs.put(key, b"\x89PNG\r\n\x1a\n truncated", "image/png")
    job = run(rt, "edit", {"fps": 8}, parent_id=parent.id, inputs={"image": key}, job_id=job_id)
    assert job.status == "failed" and job.error["code"] == "invalid_input"
    assert "PNG or JPEG" in job.error["message"]
    assert job.artifacts == {}
    assert rt.blobs.get(key) == b"\x89PNG\r\n\x1a\n truncated"


def test_edit_and_resample_of_a_source_without_artifacts_fail_as_parent_missing(rt):
    gone = "0" * 32
    job = edit(
        rt, JobRecord(id=gone, kind="generate", status="succeeded", params={}), Image.new("RGB", (32, 32))
    )
    assert job.status == "failed" and job.error["code"] == "parent_missing"
    assert gone in job.error["message"]
    job = run(rt, "resample", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8}, parent_id=gone)
    assert job.status == "failed" and job.error["code"] == "parent_missing"


def test_an_unloadable_checkpoint_fails_generate_as_model_error(tmp_path, tiny_checkpoint):
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    shutil.copy(tiny_checkpoint / "config.json", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    rt = Runtime(make_settings(tmp_path, broken.parent))
    job = run(rt, "generate", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8})
    assert job.status == "failed" and job.error["code"] == "model_error"
    assert "GENDEF_MODELS_DIR" in job.error["message"] and str(broken) in job.error["message"]


def test_params_past_the_models_limits_fail_as_invalid_input(rt):
    job = run(rt, "generate", {"seed": 1, "motion_seed": 2, "num_frames": 10_000, "fps": 8})
    assert job.status == "failed" and job.error["code"] == "invalid_input"
    assert "num_frames=10000" in job.error["message"]
    job = run(rt, "generate", {"seed": 2**40, "motion_seed": 2, "num_frames": 4, "fps": 8})
    assert job.status == "failed" and job.error["code"] == "invalid_input"
    assert f"seed={2**40}" in job.error["message"] and "4294967295" in job.error["message"]


def test_unreachable_s3_fails_as_storage_unavailable(tmp_path, tiny_checkpoint):
    rt = Runtime(
        make_settings(
            tmp_path,
            tiny_checkpoint.parent,
            storage_backend="s3",
            s3_endpoint_url="http://127.0.0.1:9",
            s3_access_key_id="test",
            s3_secret_access_key="test",
        )
    )
    job = run(rt, "generate", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8})
    assert job.status == "failed" and job.error["code"] == "storage_unavailable"
    assert job.artifacts == {}


def test_a_canceled_queued_job_is_skipped(rt):
    job = rt.jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8})
    rt.jobs.cancel(job.id)
    assert run_job(rt, job.id, "generate") is None
    assert rt.jobs.get(job.id).status == "canceled"
    assert not (rt.settings.local_storage_dir / "jobs" / job.id).exists()


def test_a_cancel_asked_while_running_stops_before_the_next_stage(rt):
    job = rt.jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8})
    rt.jobs.mark_running(job.id)
    rt.jobs.cancel(job.id)  # running: only cancel_requested is set; the worker must act on it
    assert run_job(rt, job.id, "generate") == "canceled"
    done = rt.jobs.get(job.id)
    assert done.status == "canceled" and done.artifacts == {} and done.finished_at
    assert not (rt.settings.local_storage_dir / "jobs" / job.id).exists()


def test_a_worker_keeps_its_recent_models_loaded_and_runs_only_the_version_a_job_recorded(
    tmp_path, tiny_checkpoint
):
    models = tmp_path / "models"
    for name in ("a", "b"):
        shutil.copytree(tiny_checkpoint, models / name)
    rt = Runtime(make_settings(tmp_path, models, max_loaded_models=1))
    params = {"seed": 1, "motion_seed": 2, "num_frames": 4, "fps": 8}
    job = run(rt, "generate", {"model": "a", "version": "0" * 12} | params)
    assert (
        job.status == "failed"
        and job.error["code"] == "model_unavailable"
        and "retrained" in job.error["message"]
    )
    assert rt.loaded_models() == []
    for name in ("a", "b"):
        job = run(rt, "generate", {"model": name, "version": rt.served(name).version} | params)
        assert job.status == "succeeded", job.error
        assert media.decode_fields(blob(rt, job, "deformation"))[1]["model"] == name
    assert rt.loaded_models() == [f"b@{rt.served('b').version}"]  # one at most: a went
    job = run(rt, "generate", {"model": "gone"} | params)
    assert (
        job.status == "failed" and job.error["code"] == "model_unavailable" and "gone" in job.error["message"]
    )


def test_a_conditional_models_jobs_make_the_labels_asked_and_record_the_labels_used(
    tmp_path, digits_checkpoint
):
    rt = Runtime(make_settings(tmp_path, digits_checkpoint.parent))
    model = prepare(load_checkpoint(digits_checkpoint))
    params = {"seed": 3, "motion_seed": 4, "num_frames": 4, "fps": 8}
    drawn = run(rt, "generate", params)
    seeds_labels = model.labels([3])[0].nonzero().flatten().tolist()
    assert drawn.result == {"labels": seeds_labels}  # what the seed gave
    asked = [c for c in range(10) if c not in seeds_labels][:2]
    job = run(rt, "generate", params | {"labels": asked})
    assert job.status == "succeeded" and job.result == {"labels": asked}
    expected = model.sample([3], [4], 4, labels=[asked])
    canonical, _ = media.decode_image(blob(rt, job, "canonical"))
    assert np.array_equal(media.to_uint8(canonical), media.to_uint8(expected.canonical[0]))
    assert blob(rt, job, "canonical") != blob(rt, drawn, "canonical")
    fields, meta = media.decode_fields(blob(rt, job, "deformation"))
    assert torch.equal(fields, expected.fields[0]) and meta["labels"] == asked

    # a resample of it samples the motion of that canonical image: the same labels (the API copies them)
    resampled = run(rt, "resample", params | {"motion_seed": 9, "labels": asked}, parent_id=job.id)
    assert resampled.status == "succeeded" and resampled.result == {"labels": asked}
    fields, _ = media.decode_fields(blob(rt, resampled, "deformation"))
    assert torch.equal(fields, model.sample_motion([3], [9], 4, labels=[asked])[0])
    assert blob(rt, resampled, "canonical") == blob(rt, job, "canonical")

    # labels the loaded model cannot take (the API checks them against the model's config): invalid_input
    bad = run(rt, "generate", params | {"labels": [2, 2]})
    assert (
        bad.status == "failed" and bad.error["code"] == "invalid_input" and "distinct" in bad.error["message"]
    )
