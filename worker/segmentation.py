"""gendef.segment: a label map painted on a job's canonical image carried to every frame by its fields (nearest
sampling, so labels stay labels); the video with the labels over it."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from core.artifacts import interpolation_of
from core.jobs import Artifact
from model.decomposition.tracking import propagate_mask
from model.warp import warp
from worker import media
from worker.execution import JobRun
from worker.runtime import JobFailure
from worker.tracking import palette

OVERLAY_ALPHA = 0.5  # weight of a label's colour over the frame in the segment video


def do_segment(run: JobRun) -> dict[str, Artifact]:
    canonical, fields, meta = run.parent_fields()
    upload = run.input_blob("mask")
    run.stage("warping")
    try:
        with Image.open(io.BytesIO(upload)) as image:
            labels = np.array(image)  # (Hc, Wc): the palette indices of a "P" image, the values of "L"/"1"
    except OSError as e:
        raise JobFailure("invalid_input", f"the uploaded mask cannot be decoded ({e}); upload a PNG") from e
    shot = run.shot(fields, meta, canonical.shape[2])
    size = canonical.shape[1:] if shot is None else (canonical.shape[1], shot["width"])
    if labels.shape != tuple(size):
        raise JobFailure(
            "invalid_input",
            f"the mask is {labels.shape[1]}x{labels.shape[0]}, the canonical image "
            f"{size[1]}x{size[0]}: upload a mask of its size",
        )
    if shot is not None:  # the shot's tile of the canonical image, that shot's frames
        tiled = np.zeros(canonical.shape[1:], dtype=labels.dtype)
        tiled[:, shot["x"] : shot["x"] + shot["width"]] = labels
        labels, fields = tiled, fields[shot["start"] : shot["start"] + shot["frames"]]
    masks = propagate_mask(torch.from_numpy(labels.astype(np.uint8)), fields).numpy()  # (T, H, W)
    run.stage("encoding")
    frames = media.to_uint8(warp(canonical[None], fields[None], interpolation_of(meta))[0]).astype(
        np.float32
    )  # (T, H, W, 3)
    colours = palette(256).astype(np.float32)  # (256, 3)
    labelled = (masks > 0)[..., None]  # (T, H, W, 1)
    overlay = np.where(labelled, (1 - OVERLAY_ALPHA) * frames + OVERLAY_ALPHA * colours[masks], frames)
    out = io.BytesIO()
    np.savez_compressed(out, masks=masks)
    files = {
        "masks": out.getvalue(),
        "video": media.encode_video(
            media.from_uint8(overlay.round().astype(np.uint8)), int(run.job.params["fps"])
        ),
    }
    run.stage("uploading")
    return run.upload(files)
