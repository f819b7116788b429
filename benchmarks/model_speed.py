"""Sampling speed of GenDeF presets (untrained weights: speed does not depend on them).

For each preset and batch size B: videos/s of ``model.sample`` with B seeds (16 frames each; each video computed
on its own, which keeps a video's output bit-identical whatever else is in the call: the path the worker uses), and
videos/s of one forward pass over the B videos stacked ("one pass": canonical + fields of B videos at once, not
bit-identical to one-by-one; what exactness forgoes). FLOPs of one video are counted with
torch.utils.flop_counter (matmuls and convolutions; grid_sample and elementwise ops are not counted); achieved
FLOP/s is shown as a fraction of a large float32 matmul's FLOP/s measured in the same run on the same device.
With --precisions float32 bfloat16 (and --compile) the same table is made per inference setting
(model/inference.py), so bf16 vs fp32 and compiled vs eager are compared in one run.

    python benchmarks/model_speed.py [--presets small paper] [--batches 1 2 4 8 16] [--paper-batches 1 2]
        [--device cpu|cuda] [--precisions float32 bfloat16] [--compile] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.checkpoint import resolve_device
from model.config import PRESETS, preset
from model.gendef import GenDeF
from model.inference import prepare

log = logging.getLogger("model_speed")
FRAMES = 16


def timed(fns: list[Callable[[], object]], device: torch.device, repeats: int) -> list[float]:
    """Best seconds of each fn() over `repeats` rounds after a warm-up round; the fns alternate within a round, so
    that other load on a shared machine hits them alike (the best of N is the least disturbed)."""
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats + 1):
        for fn, spent in zip(fns, times, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_:
                spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def matmul_flops_per_s(device: torch.device, repeats: int) -> float:
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed([lambda: a @ b], device, repeats)[0]


@torch.no_grad()
def one_pass(model: GenDeF, videos: int, frames: int) -> torch.Tensor:
    """Canonical images and fields of `videos` videos in one forward pass: (B, T, H, W, 2)."""
    dev, G = model.device, model
    z = torch.randn(videos, G.canonical.z_dim, device=dev)  # (B, z_dim)
    noise = [torch.randn(videos, *s, device=dev) for s in G.canonical.noise_shapes()]
    motion_z = torch.randn(videos, *G.motion.raw_code_shape(), device=dev)  # (B, R, Zm)
    t = torch.arange(frames, device=dev, dtype=torch.float32)[None].expand(videos, -1)  # (B, T)
    with G._autocast():
        _, features = G.canonical(z, noise)  # (B, C, H, W)
        return G.fields(z, features, motion_z, t)  # (B, T, H, W, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--paper-batches",
        nargs="+",
        type=int,
        default=None,
        help="batch sizes of `paper` (default: --batches on CUDA, 1 2 on the CPU)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"]
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("model.inference").setLevel(logging.WARNING)  # the table's columns say it
    device = resolve_device(args.device)
    peak = matmul_flops_per_s(device, args.repeats)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    log.info(
        "device: %s; torch %s; float32 matmul: %.1f GFLOP/s; %d frames per video",
        name,
        torch.__version__,
        peak / 1e9,
        FRAMES,
    )
    log.info(
        "%-6s %-9s %-8s %4s %5s %12s %11s %9s %14s %11s",
        "preset",
        "precision",
        "compiled",
        "res",
        "B",
        "sample vid/s",
        "GFLOP/video",
        "% matmul",
        "one pass vid/s",
        "pass/sample",
    )
    for p in args.presets:
        batches = args.batches
        if p == "paper":
            batches = args.paper_batches or (args.batches if device.type == "cuda" else [1, 2])
        for precision in args.precisions:
            for compiled in [False, True] if args.compile else [False]:
                torch.manual_seed(0)
                model = (
                    GenDeF(preset(p)).requires_grad_(False).to(device).eval()
                )  # as load_checkpoint gives it
                prepare(model, precision, channels_last=None, compile=compiled)
                with FlopCounterMode(display=False) as counter:
                    model.sample([0], [0], FRAMES)
                flops = counter.get_total_flops()
                for videos in batches:
                    seeds = list(range(videos))
                    sample_s, pass_s = timed(
                        [lambda m=model, s=seeds: m.sample(s, s, FRAMES), lambda m=model, b=videos: one_pass(m, b, FRAMES)],
                        device, args.repeats,
                    )  # fmt: skip
                    log.info(
                        "%-6s %-9s %-8s %4d %5d %12.2f %11.3f %8.1f%% %14.2f %11.2f",
                        p, precision, compiled, model.config.resolution, videos, videos / sample_s, flops / 1e9,
                        100 * flops * videos / sample_s / peak, videos / pass_s, sample_s / pass_s,
                    )  # fmt: skip


if __name__ == "__main__":
    main()
