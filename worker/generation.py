"""gendef.generate, gendef.resample, gendef.edit: a new video from the generator, new motion for a job's
canonical image, and an edited canonical image warped by a job's stored fields (the generators do not run)."""

from __future__ import annotations

from typing import Any

import torch

from core.artifacts import FIELDS_CONVENTION, ArtifactError, interpolation_of
from core.images import ImageError
from core.jobs import Artifact, JobRecord
from core.models import ModelInfo
from model.gendef import SEED_RANGE, GenDeF
from model.warp import INTERPOLATION, warp
from worker import media
from worker.decomposition import carry_paint
from worker.execution import Draw, JobRun
from worker.runtime import JobFailure


def fields_meta(
    job: JobRecord, model: ModelInfo, fields: torch.Tensor, labels: list[int] | None
) -> dict[str, Any]:
    """The `meta` entry of deformation.npz: the convention, the model and what made these fields."""
    num_frames, height, width, _ = fields.shape  # (T, H, W, 2)
    return {
        "convention": FIELDS_CONVENTION,
        "interpolation": INTERPOLATION,
        "layout": "fields: float32 (T, H, W, 2)",
        "model": model.name,
        "version": model.version,
        "job_id": job.id,
        "kind": job.kind,
        "seed": job.params["seed"],
        "motion_seed": job.params["motion_seed"],
        "labels": labels,
        "canonical_from": job.parent_id,
        "num_frames": num_frames,
        "height": height,
        "width": width,
    }


def labels_used(model: GenDeF, seed: int, asked: tuple[int, ...] | None) -> list[int] | None:
    """The class labels a conditional model's video is made of: the asked ones, else those its seed draws; None
    for an unconditional model."""
    used = model.labels([seed], [asked])  # (1, classes) multi-hot or None
    return None if used is None else used[0].nonzero().flatten().tolist()


def sampling_args(model: GenDeF, params: dict[str, Any]) -> tuple[int, int, int]:
    """(seed, motion_seed, num_frames) of a job, refused with invalid_input where the loaded model cannot go."""
    seed, motion_seed, num_frames = int(params["seed"]), int(params["motion_seed"]), int(params["num_frames"])
    if not 1 <= num_frames <= model.max_frames:
        raise JobFailure(
            "invalid_input",
            f"num_frames={num_frames} is outside what the loaded model makes (1 to {model.max_frames}); "
            "ask for fewer frames",
        )
    for name, value in (("seed", seed), ("motion_seed", motion_seed)):
        if not 0 <= value < SEED_RANGE:
            raise JobFailure(
                "invalid_input", f"{name}={value} is outside the model's seed range 0 to {SEED_RANGE - 1}"
            )
    return seed, motion_seed, num_frames


def asked_labels(model: GenDeF, params: dict[str, Any]) -> tuple[int, ...] | None:
    """The labels a job asks for (None: its seed's), refused with invalid_input where the loaded model cannot take
    them (the API checked them against the model's config)."""
    asked = params.get("labels")
    if asked is None:
        return None
    try:
        model.labels([0], [asked])
    except ValueError as e:
        raise JobFailure("invalid_input", f"labels {asked} do not fit the loaded model: {e}") from e
    return tuple(asked)


def do_generate(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    model, info = run.model()
    seed, motion_seed, num_frames = sampling_args(model, params)
    asked = asked_labels(model, params)
    run.stage("sampling")
    canonical, fields, frames = run.sample(
        Draw(model, seed, motion_seed, num_frames, image=True, labels=asked)
    )
    # (3, H, W), (T, H, W, 2), (T, 3, H, W)
    labels = labels_used(model, seed, asked)
    run.stage("encoding", None if labels is None else {"labels": labels})
    files = {
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, fields_meta(run.job, info, fields, labels)),
        "video": media.encode_video(frames, int(params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


def do_resample(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    canonical_png = run.parent_blob("canonical.png")  # kept byte for byte: same content, new motion
    model, info = run.model()
    seed, motion_seed, num_frames = sampling_args(model, params)
    asked = asked_labels(model, params)
    run.stage("sampling")
    _, fields, _ = run.sample(
        Draw(model, seed, motion_seed, num_frames, image=False, labels=asked)
    )  # (T, H, W, 2)
    labels = labels_used(model, seed, asked)
    run.stage("warping", None if labels is None else {"labels": labels})
    canonical, _ = media.decode_image(canonical_png)  # (3, H, W)
    frames = warp(canonical[None].to(fields.device), fields[None])[0]  # (T, 3, H, W)
    run.stage("encoding")
    files = {
        "canonical": canonical_png,
        "deformation": media.encode_fields(fields, fields_meta(run.job, info, fields, labels)),
        "video": media.encode_video(frames, int(params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)


def do_edit(run: JobRun) -> dict[str, Artifact]:
    """Warp the uploaded image by the source job's stored fields; the generators never run."""
    deformation_npz = run.parent_blob("deformation.npz")  # reused byte for byte
    upload = run.input_blob("image")
    run.stage("warping")
    try:
        fields, meta = media.decode_fields(deformation_npz)  # (T, H, W, 2)
    except ArtifactError as e:
        raise JobFailure(
            "parent_missing", f"the stored deformation of source job {run.job.parent_id} is unreadable ({e})"
        ) from e
    # A decomposed video's canonical image is larger than its frames; the fields' meta records its size.
    size = (meta.get("canonical_height", fields.shape[1]), meta.get("canonical_width", fields.shape[2]))
    shot = run.shot(fields, meta, size[1])
    try:
        image, _ = media.decode_image(upload, size=size if shot is None else (size[0], shot["width"]))
    except ImageError as e:
        raise JobFailure(
            "invalid_input", f"the uploaded image cannot be decoded ({e}); upload a PNG or JPEG"
        ) from e
    if shot is not None:  # one shot's edit: the upload is that shot's canonical image, put in its place
        try:
            whole, _ = media.decode_image(run.parent_blob("canonical.png"))  # (3, Hc, Wc)
        except ImageError as e:
            raise JobFailure(
                "parent_missing", f"the stored canonical image of job {run.job.parent_id} is unreadable ({e})"
            ) from e
        before = whole.clone()
        whole[:, :, shot["x"] : shot["x"] + shot["width"]] = image
        image = whole
        if run.job.params.get("carry"):  # on to the other segments of its shot (worker/decomposition.py)
            joins = media.decode_joins(deformation_npz)  # (J, 2, H, W, 2)
            image = carry_paint(before, image, run.job.params["shot"], meta, joins)
    frames = warp(image[None], fields[None], interpolation_of(meta))[0]  # (T, 3, H, W)
    run.stage("encoding")
    files = {
        "canonical": media.encode_png(image),
        "deformation": deformation_npz,
        "video": media.encode_video(frames, int(run.job.params["fps"])),
    }
    run.stage("uploading")
    return run.upload(files)
