"""A small HTTP client for the gendef API (the contract is docs/API.md); no torch, HTTP only.

>>> from client.api import Client
>>> with Client("http://127.0.0.1:8000") as c:          # api_key=... or $GENDEF_API_KEY
...     job = c.generate(seed=1, motion_seed=2).wait()
...     canonical = job.canonical()                     # (H, W, 3) uint8
...     fields, meta = job.fields()                     # (T, H, W, 2) float32, meta dict
...     frames = job.frames()                           # (T, H, W, 3) uint8

Every POST carries an Idempotency-Key made for that call, so its retries (after a lost answer, a 503, or while the
first attempt still runs) get the first job back instead of a second one.
"""

from __future__ import annotations

import io
import json
import logging
import mimetypes
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlparse

import httpx
import imageio.v3 as iio
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "canceled")
RETRIED_STATUS = (409, 503)  # 409 only with Retry-After: a POST with the same Idempotency-Key still running
MAX_RETRY_WAIT_S = 30.0

Upload = str | os.PathLike[str] | np.ndarray  # a file, or an image as an (H, W, 3) / (H, W) uint8 array


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
    """The job ended failed or canceled; `job` is the Job with its last document."""

    def __init__(self, job: Job):
        error = job.doc.get("error") or {}
        if job.status == "canceled":
            message = f"job {job.id} was canceled"
        else:
            message = f"job {job.id} failed: [{error.get('code')}] {error.get('message')}"
        super().__init__(message)
        self.job = job


class Fields(NamedTuple):
    """A job's deformation.npz: `fields` float32 (T, H, W, 2) in grid_sample's convention (docs/API.md), `meta`
    the file's JSON object (convention, model, seeds or the decomposition's figures)."""

    fields: np.ndarray
    meta: dict[str, Any]


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


def _upload(source: Upload, field: str) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) of a multipart file: a path as it is, an array encoded as PNG."""
    if isinstance(source, np.ndarray):
        out = io.BytesIO()
        Image.fromarray(source).save(out, format="PNG")
        return f"{field}.png", out.getvalue(), "image/png"
    path = Path(source)
    return path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None (None: the API's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def _form(**fields: Any) -> dict[str, str]:
    """Multipart text fields, the given ones."""
    return {name: str(value) for name, value in _given(**fields).items()}


class Job:
    """A job of the API: `doc` is its latest job document (docs/API.md); `id`, `kind`, `status`, `progress` and
    `result` read from it. `wait()` follows it to the end; the artifacts of a succeeded job come as files
    (`download`, `download_all`) or as arrays (`canonical`, `fields`, `frames`, `masks`, `tracks`)."""

    def __init__(self, client: Client, doc: dict[str, Any]):
        self.client = client
        self.doc = doc

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.status} {self.progress:.0%}>"

    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def status(self) -> str:
        return self.doc["status"]

    @property
    def progress(self) -> float:
        return float(self.doc.get("progress") or 0.0)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.doc.get("result")

    def refresh(self) -> Job:
        """GET the job document again (fresh artifact URLs too); returns self."""
        self.doc = self.client.get(self.id).doc
        return self

    def cancel(self) -> Job:
        """Cancel the job if it is queued or running (a finished job stays as it is); returns self."""
        self.doc = self.client.cancel(self.id).doc
        return self

    def wait(
        self,
        on_progress: Callable[[Job], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll until the job has succeeded and return self, calling `on_progress(job)` after each poll; raise
        JobFailed if it failed or was canceled, TimeoutError past `timeout_s` (the job goes on running)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.refresh()
            if on_progress is not None:
                on_progress(self)
            if self.status == "succeeded":
                return self
            if self.status in TERMINAL:
                raise JobFailed(self)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {self.id} is still {self.status} after {timeout_s:g} s; it goes on running: "
                    f"`gendef status {self.id}` to follow it, `gendef cancel {self.id}` to stop it"
                )
            time.sleep(poll_s)

    def _artifact(self, name: str) -> dict[str, Any]:
        artifacts = self.doc.get("artifacts") or {}
        if name not in artifacts:
            have = ", ".join(artifacts) or f"none: it is {self.status}"
            raise GendefError(f"job {self.id} has no {name!r} artifact (it has {have})")
        return artifacts[name]

    def fetch(self, name: str) -> bytes:
        """The bytes of artifact `name` ("video", "canonical", "deformation", "tracks", "masks")."""
        url = self._artifact(name)[
            "url"
        ]  # presigned S3 URL, or a signed path of the API itself (local storage)
        try:
            return self.client.request("GET", url, authorized=False).content
        except RequestRefused as e:
            raise GendefError(
                f"downloading the {name} of job {self.id} failed ({e.status_code}): {e.detail[:500]}"
            ) from e

    def file_name(self, name: str) -> str:
        """The artifact's file name in the store (video.mp4, canonical.png, deformation.npz, ...)."""
        return PurePosixPath(urlparse(self._artifact(name)["url"]).path).name

    def download(self, name: str, dest: str | os.PathLike[str]) -> Path:
        """Write artifact `name` to the file `dest`; it appears whole or not at all."""
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".part")
        partial.write_bytes(self.fetch(name))
        partial.replace(dest)
        log.info("wrote %s of job %s to %s", name, self.id, dest)
        return dest

    def download_all(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write every artifact into `folder` (made if missing) under its own file name; the paths written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            self.download(name, folder / self.file_name(name)) for name in self.doc.get("artifacts") or {}
        ]

    def canonical(self) -> np.ndarray:
        """The canonical image, (H, W, 3) uint8 (a writable array: paint on it, then `Client.edit` it)."""
        with Image.open(io.BytesIO(self.fetch("canonical"))) as image:
            return np.array(image.convert("RGB"))

    def fields(self) -> Fields:
        """The deformation fields and their meta: `fields, meta = job.fields()`."""
        with np.load(io.BytesIO(self.fetch("deformation")), allow_pickle=False) as npz:
            return Fields(npz["fields"], json.loads(str(npz["meta"])))

    def frames(self) -> np.ndarray:
        """The video's frames decoded, (T, H, W, 3) uint8 (lossy: compare canonical and fields, not frames; an
        odd height or width is padded to even, so the frames are its top-left H x W pixels)."""
        return iio.imread(self.fetch("video"), plugin="pyav", format="rgb24")

    def masks(self) -> np.ndarray:
        """A segment job's labels per frame, (T, H, W) uint8."""
        with np.load(io.BytesIO(self.fetch("masks")), allow_pickle=False) as npz:
            return npz["masks"]

    def tracks(self) -> list[list[dict[str, Any]]]:
        """A track job's tracks: [T][N] of {"x", "y", "visible"} in frame pixels."""
        return json.loads(self.fetch("tracks"))


class Client:
    """Submit jobs (one method per job kind, each returns a queued Job), follow them, fetch their artifacts.

    `api_key` (default: $GENDEF_API_KEY) is sent as `Authorization: Bearer KEY` to the API (never to the artifact
    store). Transport errors and 503s are retried `retries` times with backoff (or the answer's Retry-After).
    `transport` is an httpx transport to send through instead of the network's (a proxy's, a test's).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GENDEF_API_KEY")
        self.retries = retries
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, url: str, authorized: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one logical request, retried as the class says; a POST gets one Idempotency-Key for all its
        attempts. Raises ServerUnreachable, or RequestRefused for an error answer."""
        headers = dict(kwargs.pop("headers", {}))
        if authorized and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if method == "POST":
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        attempt = 0
        while True:
            wait_s = min(0.5 * 2**attempt, MAX_RETRY_WAIT_S)
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise ServerUnreachable(
                        f"cannot reach the gendef API at {self.base_url} ({e.__class__.__name__}: {e}); "
                        "is it running? Point --url or GENDEF_URL at it."
                    ) from e
                log.info("%s %s: %s; retrying in %.1f s", method, url, e.__class__.__name__, wait_s)
            else:
                if not response.is_error:
                    return response
                retry_after = response.headers.get("Retry-After")
                if (
                    response.status_code not in RETRIED_STATUS
                    or retry_after is None
                    or attempt == self.retries
                ):
                    raise RequestRefused(response.status_code, _detail(response))
                wait_s = min(float(retry_after), MAX_RETRY_WAIT_S)
                log.info("%s %s: %s; retrying in %.1f s", method, url, response.status_code, wait_s)
            time.sleep(wait_s)
            attempt += 1

    def _submit(self, path: str, **kwargs: Any) -> Job:
        return Job(self, self.request("POST", path, **kwargs).json())

    def generate(
        self,
        seed: int | None = None,
        motion_seed: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        model: str | None = None,
        labels: Sequence[int] | None = None,
    ) -> Job:
        """Queue a video from a content seed and a motion seed with `model` (a name of models()). None = the API's
        default (random seeds, the default model). `labels`: a conditional model's classes to make, by index in
        its `classes` (e.g. [3, 7]); None: drawn from the seed (the job's `result["labels"]` says which)."""
        body = _given(
            seed=seed,
            motion_seed=motion_seed,
            num_frames=num_frames,
            fps=fps,
            model=model,
            labels=None if labels is None else list(labels),
        )
        return self._submit("/generate", json=body)

    def resample(
        self,
        job_id: str,
        motion_seed: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
    ) -> Job:
        """Queue new motion for the canonical image of finished job `job_id`."""
        body = _given(canonical_from=job_id, motion_seed=motion_seed, num_frames=num_frames, fps=fps)
        return self._submit("/generate", json=body)

    def edit(
        self, job_id: str, image: Upload, fps: int | None = None, shot: int | None = None, carry: bool = False
    ) -> Job:
        """Queue the edited canonical `image` (a PNG or JPEG file, or an array) warped by job `job_id`'s fields;
        with `shot`, `image` is that shot's canonical image of a decomposed clip and only its frames change (with
        `carry`, also the frames of the shot's other segments, the paint carried on to them)."""
        return self._submit(
            "/edit",
            data=_form(job_id=job_id, fps=fps, shot=shot, carry="true" if carry else None),
            files={"image": _upload(image, "image")},
        )

    def track(
        self,
        job_id: str,
        points: Sequence[Sequence[float]],
        frame: int | None = None,
        shot: int | None = None,
    ) -> Job:
        """Queue tracking of `points` ([x, y] pixels of the canonical image, or of frame `frame`) through job
        `job_id`'s fields (with `shot`: that shot's canonical image and frames); artifacts `tracks` and `video`."""
        body = _given(job_id=job_id, points=[list(p) for p in points], frame=frame, shot=shot)
        return self._submit("/track", json=body)

    def segment(self, job_id: str, mask: Upload, shot: int | None = None) -> Job:
        """Queue a label map painted on job `job_id`'s canonical image (a PNG file, or an (H, W) uint8 array;
        with `shot`, on that shot's) carried to every frame; artifacts `masks` and `video`."""
        return self._submit(
            "/segment", data=_form(job_id=job_id, shot=shot), files={"mask": _upload(mask, "mask")}
        )

    def render(
        self,
        job_id: str,
        scale: int | None = None,
        fps_factor: int | None = None,
        fps: int | None = None,
        image: Upload | None = None,
    ) -> Job:
        """Queue job `job_id` rendered `scale` times larger and at `fps_factor` times the frames (None = the API's
        defaults); `image`: a larger canonical image to render instead of the upscaled one."""
        files = {"image": _upload(image, "image")} if image is not None else None
        data = _form(job_id=job_id, scale=scale, fps_factor=fps_factor, fps=fps)
        return self._submit("/render", data=data, files=files)

    def decompose(
        self,
        video: str | os.PathLike[str],
        num_frames: int | None = None,
        resolution: int | None = None,
        steps: int | None = None,
        fps: int | None = None,
    ) -> Job:
        """Queue the fitting of a canonical image and fields to the first frames of a clip (mp4, webm or gif);
        its artifacts are generate's, and `result` has `psnr_db` and `shots` (one per cut-free stretch, or per
        segment of a long one or of a camera sweep too wide for one panorama, each with its `reason`: docs/API.md,
        Shots)."""
        data = _form(num_frames=num_frames, resolution=resolution, steps=steps, fps=fps)
        return self._submit("/decompose", data=data, files={"video": _upload(video, "video")})

    def models(self) -> list[dict[str, Any]]:
        """The models served: name, version, resolution, max_frames, trained_on, classes, labels_per_video, default
        (docs/API.md)."""
        return self.request("GET", "/models").json()

    def get(self, job_id: str) -> Job:
        return Job(self, self.request("GET", f"/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> Job:
        return Job(self, self.request("POST", f"/jobs/{job_id}/cancel").json())
