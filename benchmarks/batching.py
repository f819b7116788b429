"""Dynamic batching (worker/batching.py): GENDEF_BATCH_MODE off vs pipeline vs stack, and a worker's memory.

Three embedded services (`python -m service.embedded`: its own Redis, API and one worker each) run side by side,
alike but for GENDEF_BATCH_MODE, serving the same checkpoint. Bursts of --concurrent generate jobs (16 frames)
are submitted at once to one service at a time; the services take turns burst by burst for --rounds rounds (the
order rotated each round), so that the load of a shared machine hits each mode alike. Of each burst:
- worker jobs/s: jobs / the span of the job documents (the first `started_at` to the last `finished_at`): what
  the worker does, without HTTP or polling;
- end-to-end jobs/s: jobs / the first submit to the last success seen by polling each job every 10 ms.
Printed per mode: the median of each, and the median of the per-round ratios to `off` (one job per task), which
the choice of GENDEF_BATCH_MODE=auto on this device type rests on.

Then the stack service's worker is given a job of a second model (the checkpoint again under another name): the
resident memory (RSS) of its pool process with two models loaded, against the limit of --rss-limit-gib.

    python benchmarks/batching.py [--checkpoint DIR] [--concurrent 8] [--rounds 5] [--frames 16]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
import psutil
from service_overhead import embedded

from core.settings import DEFAULT_MODELS_DIR

log = logging.getLogger("batching")
MODES = ("off", "pipeline", "stack")
POLL_S = 0.01


def burst(http: httpx.Client, jobs: int, frames: int, first_seed: int) -> tuple[float, float]:
    """Submit `jobs` generate jobs at once: (worker jobs/s from their documents, end-to-end jobs/s)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        body = {"motion_seed": 1, "num_frames": frames}
        submitted = list(
            pool.map(
                lambda s: http.post("/generate", json=body | {"seed": s}),
                range(first_seed, first_seed + jobs),
            )
        )
    pending = {r.raise_for_status().headers["location"] for r in submitted}
    docs = []
    while pending:
        for job_url in list(pending):
            job = http.get(job_url).json()
            if job["status"] not in ("queued", "running"):
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job['id']} ended {job['status']}: {job['error']}")
                pending.discard(job_url)
                docs.append(job)
        time.sleep(POLL_S)
    end_to_end = time.perf_counter() - start
    started = min(datetime.fromisoformat(d["started_at"]) for d in docs)
    finished = max(datetime.fromisoformat(d["finished_at"]) for d in docs)
    return jobs / (finished - started).total_seconds(), jobs / end_to_end


def worker_rss(service_pid: int) -> int:
    """Bytes resident in the largest process under the service (the worker's pool process, holding the models)."""
    return max(p.memory_info().rss for p in psutil.Process(service_pid).children(recursive=True) if "celery" in " ".join(p.cmdline()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_MODELS_DIR / "small")
    parser.add_argument("--concurrent", type=int, default=8, help="jobs per burst")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per mode")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rss-limit-gib", type=float, default=1.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="gendef-models-") as tmp, ExitStack() as stack:
        models = Path(tmp)
        shutil.copytree(args.checkpoint, models / "one")
        shutil.copytree(args.checkpoint, models / "two")
        services = {mode: stack.enter_context(embedded(models / "one", batch_mode=mode)) for mode in MODES}
        for http, _ in services.values():
            burst(http, 2, args.frames, 0)  # warm-up
        rates: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:
                rates[mode].append(burst(services[mode][0], args.concurrent, args.frames, 1000))

        http, pid = services["stack"]
        job = http.post("/generate", json={"model": "two", "num_frames": args.frames}).raise_for_status()
        while http.get(job.headers["location"]).json()["status"] in ("queued", "running"):
            time.sleep(0.1)
        rss = worker_rss(pid)

    med = statistics.median
    log.info(
        "%s, %d frames, bursts of %d jobs, %d rounds; worker: one process, GENDEF_TORCH_THREADS default",
        args.checkpoint, args.frames, args.concurrent, args.rounds,
    )  # fmt: skip
    log.info("%-9s %15s %14s %19s %16s", "mode", "worker jobs/s", "e2e jobs/s", "worker ratio to off", "e2e ratio to off")  # fmt: skip
    for mode in MODES:
        pairs = list(zip(rates["off"], rates[mode], strict=True))
        log.info(
            "%-9s %15.2f %14.2f %19.2f %16.2f   (worker ratios: %s)",
            mode, med(w for w, _ in rates[mode]), med(e for _, e in rates[mode]),
            med(m[0] / o[0] for o, m in pairs), med(m[1] / o[1] for o, m in pairs),
            " ".join(f"{m[0] / o[0]:.2f}" for o, m in pairs),
        )  # fmt: skip
    log.info(
        "worker RSS with two models loaded: %.2f GiB (limit %.1f GiB: %s)",
        rss / 2**30, args.rss_limit_gib, "within" if rss <= args.rss_limit_gib * 2**30 else "OVER",
    )  # fmt: skip


if __name__ == "__main__":
    main()
