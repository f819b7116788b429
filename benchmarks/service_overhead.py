"""What the service adds to a job: submit→succeeded through the embedded service vs the same work in-process.

Starts `python -m service.embedded` (its own Redis, local storage, one worker) in a temporary folder, then measures:
- generate: the median submit→succeeded time of N jobs of 16 frames (POST /generate, then GET /jobs/{id} every
  few ms until it says succeeded) against the median time of the bare work of the same jobs in this process
  (model.sample + the PNG, npz and mp4 encoding), as a ratio;
- edit: the median submit→succeeded time of N edits of one job (POST /edit with its canonical image) against the
  generate median above, as a ratio, and against the bare work (render + encoding).
The job records' own timestamps (created→finished) are shown too: they leave out the HTTP round trips and polling.
Where the time of one generate job goes: the medians of its job document's `metrics` (queue wait, each stage).

Dynamic batching is measured by benchmarks/batching.py.

    python benchmarks/service_overhead.py [--checkpoint DIR] [--jobs 10] [--frames 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import torch

from core.settings import DEFAULT_MODELS_DIR
from model.checkpoint import load_checkpoint
from model.warp import warp
from worker import media

log = logging.getLogger("service_overhead")
POLL_S = 0.005


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the embedded service at {url} did not become ready")


def run_job(http: httpx.Client, submit: Callable[[], httpx.Response]) -> tuple[float, float, dict]:
    """(client seconds submit→succeeded, record seconds created→finished, the job document)."""
    start = time.perf_counter()
    response = submit()
    response.raise_for_status()
    job_url = response.headers["location"]
    while (job := http.get(job_url).json())["status"] in ("queued", "running"):
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job['error']}")
    record = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    return elapsed, record, job


def bare_generate(model, seed: int, frames: int) -> None:
    out = model.sample([seed], [seed + 1], frames)
    media.encode_png(out.canonical[0])
    media.encode_fields(out.fields[0], {"seed": seed})
    media.encode_video(out.frames[0], 8)


def bare_edit(canonical: torch.Tensor, fields: torch.Tensor) -> None:
    frames = warp(canonical[None], fields[None])[0]  # (T, 3, H, W)
    media.encode_png(canonical)
    media.encode_video(frames, 8)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def embedded(checkpoint: Path, **settings: str) -> Iterator[tuple[httpx.Client, int]]:
    """`python -m service.embedded` in a temporary folder with these GENDEF_ settings: a client of its API, its pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
    models = {"GENDEF_MODELS_DIR": str(checkpoint.resolve().parent), "GENDEF_DEFAULT_MODEL": checkpoint.name}
    env |= {"PORT": str(port)} | models
    env |= {f"GENDEF_{k.upper()}": v for k, v in settings.items()}
    with tempfile.TemporaryDirectory(prefix="gendef-bench-") as tmp:
        service = subprocess.Popen(
            [sys.executable, "-m", "service.embedded"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(url, service)
            with httpx.Client(base_url=url, timeout=60) as http:
                yield http, service.pid
        finally:
            service.send_signal(signal.SIGINT)
            service.wait(60)


def where_time_goes(docs: list[dict]) -> str:
    """Medians of the jobs' metrics: queue wait, then each stage, in seconds."""
    med = statistics.median
    parts = [f"queue wait {med(d['metrics']['queue_time'] for d in docs):.3f}"]
    for stage in docs[0]["metrics"]["stage_times"]:
        parts.append(f"{stage} {med(d['metrics']['stage_times'].get(stage, 0.0) for d in docs):.3f}")
    parts.append(f"run {med(d['metrics']['run_time'] for d in docs):.3f}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_MODELS_DIR / "small")
    parser.add_argument("--jobs", type=int, default=10, help="jobs of each kind (after 2 warm-up jobs)")
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    model = load_checkpoint(args.checkpoint, device="cpu")
    # Service and bare runs alternate, job by job, so that a change of load on the machine hits both alike.
    with embedded(args.checkpoint) as (http, _):

        def generate(seed: int) -> tuple[float, float, dict]:
            body = {"seed": seed, "motion_seed": seed + 1, "num_frames": args.frames}
            return run_job(http, lambda: http.post("/generate", json=body))

        for seed in range(2):  # warm-up
            generate(seed)
            bare_generate(model, seed, args.frames)
        gen, bare_gen = [], []
        for seed in range(100, 100 + args.jobs):
            gen.append(generate(seed))
            bare_gen.append(timed(lambda s=seed: bare_generate(model, s, args.frames)))

        source = gen[0][2]
        canonical_png = httpx.get(source["artifacts"]["canonical"]["url"]).content
        deformation = httpx.get(source["artifacts"]["deformation"]["url"]).content
        canonical, _ = media.decode_image(canonical_png)  # (3, H, W)
        fields, _ = media.decode_fields(deformation)  # (T, H, W, 2)

        def edit() -> tuple[float, float, dict]:
            return run_job(
                http,
                lambda: http.post(
                    "/edit", data={"job_id": source["id"]}, files={"image": ("edit.png", canonical_png)}
                ),
            )

        edit()  # warm-up
        bare_edit(canonical, fields)
        edits, bare_edits = [], []
        for _ in range(args.jobs):
            edits.append(edit())
            bare_edits.append(timed(lambda: bare_edit(canonical, fields)))

    med = statistics.median
    gen_client, gen_record = med(t for t, _, _ in gen), med(r for _, r, _ in gen)
    edit_client, edit_record = med(t for t, _, _ in edits), med(r for _, r, _ in edits)
    log.info(
        "checkpoint %s, %d frames, %d jobs of each kind, cpu, %d torch threads",
        args.checkpoint,
        args.frames,
        args.jobs,
        torch.get_num_threads(),
    )
    log.info("%-9s %14s %14s %10s %14s", "kind", "service s", "record s", "bare s", "service/bare")
    log.info(
        "%-9s %14.4f %14.4f %10.4f %14.2f",
        "generate",
        gen_client,
        gen_record,
        med(bare_gen),
        gen_client / med(bare_gen),
    )
    log.info(
        "%-9s %14.4f %14.4f %10.4f %14.2f",
        "edit",
        edit_client,
        edit_record,
        med(bare_edits),
        edit_client / med(bare_edits),
    )
    run_time = {kind: med(doc["metrics"]["run_time"] for _, _, doc in jobs) for kind, jobs in (("generate", gen), ("edit", edits))}  # fmt: skip
    log.info(
        "edit/generate: worker run time %.3f (metrics.run_time), through the service %.2f, bare %.2f",
        run_time["edit"] / run_time["generate"], edit_client / gen_client, med(bare_edits) / med(bare_gen),
    )  # fmt: skip
    for kind, jobs in (("generate", gen), ("edit", edits)):
        log.info("where the time of one %s job goes (medians of its metrics, s): %s", kind, where_time_goes([doc for _, _, doc in jobs]))  # fmt: skip


if __name__ == "__main__":
    main()
