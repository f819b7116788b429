"""The /decompose limits in a real worker: an API that accepts the uploads and a worker whose limits are lower (as
after a worker's settings were tightened). The worker decodes with a check of each frame and stops at the first
one past a limit: each job fails `invalid_input` naming the limit and the frame, and keeps its input."""

from __future__ import annotations

import httpx

from tests.worker.video_checks import vp8_webm

WORKER_LIMITS = dict(
    max_video_pixels=16 * 16, max_video_frames=6, max_video_duration_s=1.0, max_decompose_frames=4
)
CASES = {  # (video, num_frames) -> what the job's error says
    "pixels": ((vp8_webm([(32, 3)]), 3), "frame 0 is 32x32 = 1024 pixels; the limit is 256"),
    "frames": ((vp8_webm([(8, 8)], fps=60), 8), "video has more than 6 frames"),
    "duration": ((vp8_webm([(8, 4)], fps=2), 4), "frame 3 is at 1.5 s; the limit is 1.0 s"),
    # 4 frames of 256 pixels are the most (max_decompose_frames x max_video_pixels): frame 4 passes the total
    "total": (
        (vp8_webm([(16, 6)], fps=60), 6),
        "frame 4 brings the decoded pixels to 1280; the limit is 1024",
    ),
}


def test_the_worker_stops_at_the_first_frame_past_each_limit(own_redis, deploy):
    worker = deploy(redis_url=own_redis.url, **WORKER_LIMITS)
    worker.start_worker()
    api = deploy(redis_url=own_redis.url)
    url = api.start_api()
    jobs = {}
    for name, ((video, num_frames), _) in CASES.items():
        r = httpx.post(
            f"{url}/decompose",
            files={"video": ("clip.webm", video, "video/webm")},
            data={"num_frames": str(num_frames), "steps": "5"},
            timeout=30,
        )
        assert r.status_code == 202, (name, r.text)
        jobs[name] = r.json()["id"]
    for name, job_id in jobs.items():
        job = worker.wait(job_id)
        assert job.status == "failed" and job.error["code"] == "invalid_input", (name, job, worker.logs())
        assert CASES[name][1] in job.error["message"], (name, job.error)
        assert (api.settings.local_storage_dir / job.inputs["video"]).read_bytes() == CASES[name][0][0]
        assert job.artifacts == {}
