"""The embedded mode as `make run` starts it: `python -m service.embedded` with nothing but PORT set, in an empty
working folder. It must start its own Redis, serve a job to success with the shipped weights and stop every
process it started on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import free_port, wait_for
from tests.worker.video_checks import decode_video


def descendants(pid: int) -> set[int]:
    """Every process below pid (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_make_run_serves_a_job_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDEF_")} | {"PORT": str(port)}
    log = tmp_path / "embedded.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "service.embedded"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    started: set[int] = set()
    try:
        wait_for(f"{url}/readyz", {log: launcher})
        response = httpx.post(f"{url}/generate", json={"seed": 1, "motion_seed": 2, "num_frames": 8})
        assert response.status_code == 202, response.text
        job_url = f"{url}{response.headers['location']}"
        deadline = time.monotonic() + 60
        while (job := httpx.get(job_url).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "succeeded", job["error"]
        video = httpx.get(job["artifacts"]["video"]["url"])  # served by the API itself, signed
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert decode_video(video.content)[0].shape[0] == 8
        assert (tmp_path / "var" / "artifacts" / "jobs" / job["id"] / "video.mp4").is_file()
        assert (tmp_path / "var" / "redis").is_dir()

        started = descendants(launcher.pid)
        assert len(started) >= 4, started  # redis-server, the API, the worker and its pool process
    finally:
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert not [pid for pid in started if alive(pid)], "processes left running after Ctrl-C"
