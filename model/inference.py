"""Inference settings of a loaded model: precision (autocast), memory layout and torch.compile.

    model = prepare(load_checkpoint(path, device), precision="auto", channels_last=None, compile=False)

- precision: "float32", or "bfloat16"/"float16" autocast of the generators (the motion encoder, whose Fourier
  phases grow with the frame index, stays float32; outputs are float32 either way). "auto" is bfloat16 on CUDA
  and float32 on the CPU: CPUs without bf16 instructions run bf16 slower than float32. Reduced precision stays
  within TOLERANCE of float32 (tests/model/test_inference.py checks it for bf16 on the CPU).
- channels_last: the NHWC layout of conv weights (and so of activations); None means on (on this project's CPU it
  sped the shipped model's sampling up by ~1.5x, benchmarks/model_speed.py).
- compile: torch.compile of the canonical and the deformation generator, then one warm-up sample so that the
  compilation happens here (at worker start) and not in the first user's job. Off unless asked for: on this
  project's 2-core CPU the warm-up of even `tiny` took minutes and the compiled model was not faster.

Each of these changes the kernels that run, so outputs may differ from plain float32 in the last bits (or within
TOLERANCE); with the same settings on the same device, the same seeds still give the same outputs bit for bit.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import torch

from model.gendef import GenDeF

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Largest differences of a reduced-precision sample from the float32 one. Images are in [-1, 1] (0.1 is 13 of 255
# levels); fields in pixels. Frames are canonical images warped by fields: at a sharp edge a fraction of a pixel
# of field error moves a pixel's value a lot, so frames are bounded on average only.
TOLERANCE = {
    "canonical_max": 0.1,  # largest |difference| of a canonical pixel
    "fields_max_px": 0.75,  # largest |difference| of a field coordinate, in pixels
    "fields_mean_px": 0.1,  # mean |difference| of the field coordinates, in pixels
    "frames_mean": 0.02,  # mean |difference| of the frame pixels
}


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[precision]


def prepare(
    model: GenDeF,
    precision: Precision = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    warmup_frames: int = 16,
) -> GenDeF:
    """Apply the inference settings to a loaded model (in place; returned for chaining)."""
    model.precision = resolve_precision(precision, model.device)
    channels_last = True if channels_last is None else channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.canonical.compile(dynamic=True)  # one graph for every frame count, not one per count
        if not model.moves_objects:
            model.deformation.compile(dynamic=True)
        started = time.perf_counter()
        model.sample([0], [0], min(warmup_frames, model.max_frames))
        log.info("torch.compile warm-up took %.1f s", time.perf_counter() - started)
    log.info(
        "inference on %s: %s, %s%s", model.device, str(model.precision).removeprefix("torch."),
        "channels_last" if channels_last else "contiguous",
        ", compiled" if compile else "",
    )  # fmt: skip
    return model
