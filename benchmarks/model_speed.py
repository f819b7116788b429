"""Sampling speed of GenDeF presets (untrained weights: speed does not depend on them).

For each preset: seconds to sample 1 video and 8 videos at once (16 frames each), the FLOPs of one video
(torch.utils.flop_counter: matmuls and convolutions; grid_sample and elementwise ops are not counted), and the
achieved FLOP/s as a fraction of a large float32 matmul's FLOP/s measured in the same run on the same device.

    python benchmarks/model_speed.py [--presets tiny small] [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.checkpoint import resolve_device
from model.config import PRESETS, preset
from model.gendef import GenDeF

log = logging.getLogger("model_speed")
FRAMES = 16


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(device: torch.device, repeats: int) -> float:
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=sorted(PRESETS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    peak = matmul_flops_per_s(device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    log.info("device: %s; torch %s; float32 matmul: %.1f GFLOP/s", name, torch.__version__, peak / 1e9)
    log.info("%-6s %5s %8s %12s %10s %12s %9s", "preset", "res", "videos", "s/call", "s/video", "GFLOP/video", "% matmul")
    for p in args.presets:
        torch.manual_seed(0)
        model = GenDeF(preset(p)).requires_grad_(False).to(device).eval()  # as load_checkpoint gives it
        with FlopCounterMode(display=False) as counter:
            model.sample([0], [0], FRAMES)
        flops = counter.get_total_flops()
        for videos in (1, 8):
            seeds = list(range(videos))
            seconds = timed(lambda m=model, s=seeds: m.sample(s, s, FRAMES), device, args.repeats)
            achieved = flops * videos / seconds
            log.info(
                "%-6s %5d %8d %12.4f %10.4f %12.3f %8.1f%%",
                p, model.config.resolution, videos, seconds, seconds / videos, flops / 1e9, 100 * achieved / peak,
            )  # fmt: skip


if __name__ == "__main__":
    main()
