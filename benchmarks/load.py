"""Load: N generate jobs from C concurrent clients (asyncio + httpx); every job must end succeeded, none lost.

Without --url it starts `python -m service.embedded` (its own Redis, local storage, one Celery worker) in a
temporary folder with a tiny random checkpoint (32x32), so the figures are the service's (HTTP, Redis, Celery,
storage), not the model's. Prints, measured in this one run: accepted/s (submissions answered 202 per second of
the submission phase), p50/p95 submit latency, jobs/s (succeeded jobs per second from the first submission to the
last job's end), and lost (accepted jobs that never ended or vanished: must be 0).

    python benchmarks/load.py [--jobs 200] [--clients 20] [--frames 2] [--url http://host:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

log = logging.getLogger("load")
FINAL = ("succeeded", "failed", "canceled")


def tiny_checkpoint(folder: Path) -> Path:
    import torch  # only to make the stand-in checkpoint

    from model.checkpoint import save_checkpoint
    from model.config import preset
    from model.gendef import GenDeF

    torch.manual_seed(0)
    return save_checkpoint(GenDeF(preset("tiny")), folder / "tiny", card={"status": "load benchmark weights"})


def start_embedded(folder: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")}
    checkpoint = tiny_checkpoint(folder)
    env |= {"PORT": str(port), "GENDEF_DEVICE": "cpu"}
    env |= {"GENDEF_MODELS_DIR": str(checkpoint.parent), "GENDEF_DEFAULT_MODEL": checkpoint.name}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.embedded"],
        cwd=folder,
        env=env,
        stdout=open(folder / "service.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the embedded service did not become ready; see {folder / 'service.log'}")


async def client(
    http: httpx.AsyncClient, jobs: int, frames: int, latencies: list[float], ids: list[str]
) -> None:
    for _ in range(jobs):
        start = time.perf_counter()
        r = await http.post("/generate", json={"num_frames": frames})
        latencies.append(time.perf_counter() - start)
        if r.status_code != 202:
            raise RuntimeError(f"submission refused: {r.status_code} {r.text}")
        ids.append(r.json()["id"])


async def wait_all(http: httpx.AsyncClient, ids: list[str], timeout_s: float) -> dict[str, str]:
    """id -> final status, or "lost" for a job that vanished (404) or did not end in time."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            r = await http.get(f"/jobs/{job_id}")
            if r.status_code == 404 or r.json()["status"] in FINAL:
                statuses[job_id] = "lost" if r.status_code == 404 else r.json()["status"]
                pending.discard(job_id)
        await asyncio.sleep(0.5)
    return statuses | {job_id: "lost" for job_id in pending}


async def run(url: str, jobs: int, clients: int, frames: int, timeout_s: float) -> None:
    latencies: list[float] = []
    ids: list[str] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)
    ) as http:
        start = time.perf_counter()
        share = [jobs // clients + (i < jobs % clients) for i in range(clients)]
        await asyncio.gather(*(client(http, n, frames, latencies, ids) for n in share))
        submitted = time.perf_counter() - start
        statuses = await wait_all(http, ids, timeout_s)
        ended = time.perf_counter() - start
    counts = {s: list(statuses.values()).count(s) for s in (*FINAL, "lost")}
    q = statistics.quantiles(latencies, n=100)
    log.info("%d jobs from %d clients (%d frames each) against %s", jobs, clients, frames, url)
    log.info("accepted: %d in %.1f s = %.1f accepted/s", len(ids), submitted, len(ids) / submitted)
    log.info("submit latency: p50 %.1f ms, p95 %.1f ms", q[49] * 1000, q[94] * 1000)
    log.info(
        "jobs: %s; %.2f jobs/s (first submission to last end, %.1f s)",
        counts,
        counts["succeeded"] / ended,
        ended,
    )
    log.info("lost=%d", counts["lost"])
    if counts["succeeded"] != jobs:
        raise SystemExit(f"not every job succeeded: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running deployment (default: start the embedded one here)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the jobs to end")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.url:
        asyncio.run(run(args.url, args.jobs, args.clients, args.frames, args.timeout))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url, process = start_embedded(Path(tmp))
        try:
            asyncio.run(run(url, args.jobs, args.clients, args.frames, args.timeout))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


if __name__ == "__main__":
    main()
