"""A small HTTP client for the gendef API (the contract is docs/API.md)."""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

Job = dict[str, Any]
TERMINAL = ("succeeded", "failed", "canceled")


class GendefError(Exception):
    """Base of every error the client raises; str() is a sentence meant for a person."""


class ServerUnreachable(GendefError):
    pass


class RequestRefused(GendefError):
    """The API answered with an error status; `detail` is its message."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"the API refused the request ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


class JobFailed(GendefError):
    """The job ended failed or canceled; `job` is its last document."""

    def __init__(self, job: Job):
        error = job.get("error") or {}
        if job["status"] == "canceled":
            message = f"job {job['id']} was canceled"
        else:
            message = f"job {job['id']} failed: [{error.get('code')}] {error.get('message')}"
        super().__init__(message)
        self.job = job


def _detail(response: httpx.Response) -> str:
    """The API's `detail` as one line: a string, or FastAPI's list of validation errors."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
            parts.append(f"{'.'.join(loc)}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail)


class Client:
    """Submit jobs, follow them and download their artifacts.

    >>> c = Client("http://127.0.0.1:8000")
    >>> job = c.wait(c.generate(seed=1, motion_seed=2)["id"])
    >>> c.download(job, "video", "out.mp4")
    """

    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as e:
            raise ServerUnreachable(
                f"cannot reach the gendef API at {self.base_url} ({e.__class__.__name__}: {e}); "
                "is it running? Point --url or GENDEF_URL at it."
            ) from e
        if response.is_error:
            raise RequestRefused(response.status_code, _detail(response))
        return response

    def generate(
        self,
        seed: int | None = None,
        motion_seed: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        canonical_from: str | None = None,
        model: str | None = None,
    ) -> Job:
        """Queue a generate job (a resample job when `canonical_from` is given) with `model` (a name of models()).
        None = the API's default."""
        body = {
            "model": model,
            "seed": seed,
            "motion_seed": motion_seed,
            "num_frames": num_frames,
            "fps": fps,
            "canonical_from": canonical_from,
        }
        return self._request(
            "POST", "/generate", json={k: v for k, v in body.items() if v is not None}
        ).json()

    def resample(
        self,
        job_id: str,
        motion_seed: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
    ) -> Job:
        """Queue new motion for the canonical image of finished job `job_id`."""
        return self.generate(motion_seed=motion_seed, num_frames=num_frames, fps=fps, canonical_from=job_id)

    def edit(self, job_id: str, image: str | os.PathLike[str], fps: int | None = None) -> Job:
        """Queue the edited canonical `image` (PNG or JPEG) warped by job `job_id`'s deformation fields."""
        path = Path(image)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = {"job_id": job_id} | ({"fps": str(fps)} if fps is not None else {})
        with path.open("rb") as f:
            return self._request(
                "POST", "/edit", data=data, files={"image": (path.name, f, content_type)}
            ).json()

    def models(self) -> list[dict[str, Any]]:
        """The models served: name, version, resolution, max_frames, trained_on, default (docs/API.md)."""
        return self._request("GET", "/models").json()

    def get(self, job_id: str) -> Job:
        return self._request("GET", f"/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> Job:
        return self._request("POST", f"/jobs/{job_id}/cancel").json()

    def wait(
        self,
        job_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job has succeeded and return its document; raise JobFailed if it failed or was
        canceled, TimeoutError past `timeout_s` (the job goes on running)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] == "succeeded":
                return job
            if job["status"] in TERMINAL:
                raise JobFailed(job)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} is still {job['status']} after {timeout_s:g} s; "
                    f"it goes on running: `gendef status {job_id}` to follow it, `gendef cancel {job_id}` to stop it"
                )
            time.sleep(poll_s)

    def download(self, job: Job, artifact: str, dest: str | os.PathLike[str]) -> Path:
        """Write artifact `artifact` ("video", "canonical", "deformation") of a succeeded job to `dest`.
        The file appears whole or not at all."""
        artifacts = job.get("artifacts") or {}
        if artifact not in artifacts:
            raise GendefError(
                f"job {job['id']} has no {artifact!r} artifact (it has: {', '.join(artifacts)})"
            )
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".part")
        url = artifacts[artifact]["url"]  # presigned S3 URL, or a path of the API itself in embedded mode
        try:
            with self._http.stream("GET", url) as response:
                if response.is_error:
                    response.read()
                    raise GendefError(
                        f"downloading the {artifact} of job {job['id']} failed ({response.status_code}): "
                        f"{response.text.strip()[:500]}"
                    )
                with partial.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as e:
            partial.unlink(missing_ok=True)
            raise ServerUnreachable(
                f"downloading the {artifact} of job {job['id']} from {url} failed: {e}"
            ) from e
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        log.info("wrote %s of job %s to %s", artifact, job["id"], dest)
        return dest
