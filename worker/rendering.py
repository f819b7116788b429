"""gendef.render: a finished job's canonical image and fields rendered beyond their grid (model/decomposition/upsampling.py): `scale`
times the pixels (the canonical upscaled, or the larger one uploaded), `fps_factor` times the frames (a generated
video's motion sampled between its frames, a decomposed one's fields interpolated within each shot). Its
deformation.npz holds the fields at the new frame times on the source's grid (the video's are those upsampled by
model.decomposition.upsampling.upsample_fields)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core import video
from core.artifacts import interpolation_of, shots_of
from core.images import ImageError
from core.jobs import Artifact
from model.decomposition.upsampling import frame_times, interpolate_fields, upscale_image, warp_upsampled
from worker import media
from worker.execution import JobRun, run_model
from worker.runtime import JobFailure

CHUNK_PIXELS = 2**23  # output pixels rendered at once (frames x height x width): bounds the float32 buffers


def fields_in_time(run: JobRun, fields: torch.Tensor, meta: dict[str, Any], width: int) -> torch.Tensor:
    """(T, H, W, 2) -> (T factor, H, W, 2): frame j at time j / factor; frame j factor is frame j exactly."""
    factor = int(run.job.params["fps_factor"])
    motion = run.job.params.get("motion")
    if factor == 1:
        return fields
    if motion is None:  # decomposed: no motion codes, interpolate within each shot
        shots = [(s["start"], s["start"] + s["frames"]) for s in shots_of(meta, fields.shape[0], width)]
        return interpolate_fields(fields, factor, shots)
    model, _ = run.model()
    times = frame_times(fields.shape[0], factor)
    # Past the model's last frame time (a video of max_frames frames) the last frames hold it.
    between = [min(t, model.max_frames - 1) for t in times if t != int(t)]
    sampled = run_model(
        "sampling motion",
        lambda: model.motion_at(
            int(motion["seed"]), int(motion["motion_seed"]), between, motion.get("labels")
        ).cpu(),
    )  # (len(between), H, W, 2)
    out = fields.new_empty(len(times), *fields.shape[1:])
    out[::factor] = fields  # the stored fields, bit for bit
    out[[j for j, t in enumerate(times) if t != int(t)]] = sampled
    return out


def do_render(run: JobRun) -> dict[str, Artifact]:
    params = run.job.params
    scale = int(params["scale"])
    canonical, fields, meta = run.parent_fields()  # (3, Hc, Wc), (T, H, W, 2)
    if "image" in run.job.inputs:
        try:
            canonical, _ = media.decode_image(run.input_blob("image"))  # any size: the fields are normalized
        except ImageError as e:
            raise JobFailure(
                "invalid_input", f"the uploaded image cannot be decoded ({e}); upload a PNG or JPEG"
            ) from e
    else:
        canonical = upscale_image(canonical, scale)
    run.stage("sampling")
    fields = fields_in_time(run, fields, meta, int(meta.get("canonical_width", fields.shape[2])))
    run.stage("warping")
    T, H, W, _ = fields.shape
    fps = int(params["fps"])
    run.report("warping", 1 / 4, {"frames": T, "width": W * scale, "height": H * scale, "fps": fps})
    chunk = max(1, CHUNK_PIXELS // (H * W * scale * scale))
    frames = np.concatenate(
        [
            media.to_uint8(warp_upsampled(canonical, fields[i : i + chunk], scale, interpolation_of(meta)))
            for i in range(0, T, chunk)
        ]
    )  # (T, sH, sW, 3)
    run.stage("encoding")
    factor = int(params["fps_factor"])
    source_width = int(meta.get("canonical_width", W))
    meta |= {
        "job_id": run.job.id,
        "kind": run.job.kind,
        "num_frames": T,
        "scale": scale,
        "fps_factor": factor,
        "canonical_height": canonical.shape[1],
        "canonical_width": canonical.shape[2],
    }
    if "shots" in meta:  # the shots in the new frames and the rendered canonical image
        ratio = canonical.shape[2] / source_width
        meta["shots"] = [
            {
                "start": s["start"] * factor,
                "frames": s["frames"] * factor,
                "x": round(s["x"] * ratio),
                "width": round(s["width"] * ratio),
            }
            for s in meta["shots"]
        ]
    files = {
        "video": video.encode_mp4(frames, fps),
        "canonical": media.encode_png(canonical),
        "deformation": media.encode_fields(fields, meta),  # at the new times, on the source's grid
    }
    run.stage("uploading")
    return run.upload(files)
