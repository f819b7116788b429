"""Sampling speed of GenDeF presets (or a checkpoint), one video per forward pass vs the videos stacked.

For each preset and batch size B: videos/s of ``model.sample`` with B seeds (16 frames each), each video in its own
forward pass (``alone``: bit-identical whatever else is in the call) and all B in one (``stacked``: what the
worker's stacked batches run, within STACK_TOLERANCE of alone). Both include everything the worker's sampling does
(canonical image, fields, clamp, render). FLOPs of one video are counted with torch.utils.flop_counter (matmuls and
convolutions of the graph that runs; grid_sample and elementwise ops are not counted); the achieved FLOP/s of
both is shown as a fraction of a large matmul's FLOP/s (in the precision of the row) timed in the same rounds, on the same device
and CPU threads (GENDEF_TORCH_THREADS, as the worker pins them). --precisions and --channels-last make the same
table per inference setting (model/inference.py), so the settings are compared in one run.

    python benchmarks/model_speed.py [--presets small paper] [--checkpoint DIR] [--batches 1 2 4 8 16]
        [--paper-batches 1 2] [--device cpu|cuda] [--precisions float32 bfloat16] [--channels-last on off]
        [--compile] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.settings import Settings
from model.checkpoint import load_checkpoint, resolve_device
from model.config import PRESETS, preset
from model.gendef import GenDeF
from model.inference import DTYPES, prepare

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


def matmul(device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], object], float]:
    """A large matmul and its FLOPs: the bound, timed in the same rounds as the sampling it bounds."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return lambda: a @ b, 2 * n**3


def models(args: argparse.Namespace, device: torch.device) -> list[tuple[str, GenDeF]]:
    """(name, model) of each preset (random weights: speed does not depend on them) and of --checkpoint."""
    named = []
    for p in args.presets:
        torch.manual_seed(0)
        named.append(
            (p, GenDeF(preset(p)).requires_grad_(False).to(device).eval())
        )  # as load_checkpoint gives it
    if args.checkpoint:
        named.append((args.checkpoint.name, load_checkpoint(args.checkpoint, device=device)))
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["small", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--checkpoint", type=Path, help="also a checkpoint folder, e.g. model/weights/small")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--paper-batches", nargs="+", type=int, default=None,
        help="batch sizes of `paper` (default: --batches on CUDA, 1 2 on the CPU)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"]
    )
    parser.add_argument("--channels-last", nargs="+", default=["on"], choices=["on", "off"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("model.inference").setLevel(logging.WARNING)  # the table's columns say it
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(Settings().torch_threads)  # as the worker pins them
    bounds = {p: matmul(device, DTYPES[p]) for p in args.precisions}
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    log.info(
        "device: %s; torch %s; %d frames per video; %% matmul: of a matmul's FLOP/s timed in the same rounds",
        name, torch.__version__, FRAMES,
    )  # fmt: skip
    columns = ("model", "precision", "layout", "compiled", "B", "alone vid/s", "stacked vid/s", "stacked/alone", "GFLOP/video", "% matmul alone", "stacked")  # fmt: skip
    log.info("%-7s %-9s %-8s %-8s %4s %12s %14s %14s %12s %15s %8s", *columns)
    for model_name, base in models(args, device):
        batches = args.batches
        if model_name == "paper":
            batches = args.paper_batches or (args.batches if device.type == "cuda" else [1, 2])
        for precision in args.precisions:
            for layout in args.channels_last:
                for compiled in [False, True] if args.compile else [False]:
                    model = prepare(
                        copy.deepcopy(base), precision, channels_last=layout == "on", compile=compiled
                    )
                    with FlopCounterMode(display=False) as counter:
                        model.sample([0], [0], FRAMES)
                    flops = counter.get_total_flops()
                    for videos in batches:
                        seeds = list(range(videos))
                        bound, bound_flops = bounds[precision]
                        alone_s, stacked_s, bound_s = timed(
                            [lambda m=model, s=seeds: m.sample(s, s, FRAMES), lambda m=model, s=seeds: m.sample(s, s, FRAMES, stack=True), bound],
                            device, args.repeats,
                        )  # fmt: skip
                        peak = bound_flops / bound_s
                        log.info(
                            "%-7s %-9s %-8s %-8s %4d %12.2f %14.2f %14.2f %12.3f %14.1f%% %7.1f%%",
                            model_name, precision, "nhwc" if layout == "on" else "nchw", compiled, videos,
                            videos / alone_s, videos / stacked_s, alone_s / stacked_s, flops / 1e9,
                            100 * flops * videos / alone_s / peak, 100 * flops * videos / stacked_s / peak,
                        )  # fmt: skip


if __name__ == "__main__":
    main()
