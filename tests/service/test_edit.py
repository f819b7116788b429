"""POST /edit: the parent job and the upload are checked before anything is queued; the upload becomes the job's
input."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.service.helpers import CANONICAL_SIZE, MAX_UPLOAD_BYTES, Server, png_bytes
from tests.service.test_generate import queued_tasks


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def edit(
    http: httpx.Client, job_id: str, image: bytes, name: str = "edited.png", **fields: str
) -> httpx.Response:
    return http.post("/edit", data={"job_id": job_id, **fields}, files={"image": (name, image, "image/png")})


def test_edit_of_a_finished_job_stores_the_upload_as_its_input(
    http: httpx.Client, server: Server, finished_job: dict, redis_db: redis.Redis
):
    image = png_bytes(seed=9)
    r = edit(http, finished_job["id"], image)

    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["kind"] == "edit" and job["status"] == "queued" and job["parent_id"] == finished_job["id"]
    # fps defaults to the source job's (12); the upload has the canonical's size, so no resize.
    made_by = {k: finished_job["params"][k] for k in ("model", "version")}  # the source job's
    assert job["params"] == made_by | {
        "fps": 12,
        "resized": False,
        "source_size": list(CANONICAL_SIZE),
        "shot": None,
        "carry": False,
    }
    record = server.jobs.get(job["id"])
    assert record.inputs == {"image": f"jobs/{job['id']}/input/image.png"}
    assert server.blobs.get(record.inputs["image"]) == image
    assert queued_tasks(redis_db, "gendef-edit") == [("gendef.edit", [job["id"]])]


def test_edit_records_a_resize_for_another_size_and_takes_jpeg(
    http: httpx.Client, server: Server, finished_job: dict
):
    image = png_bytes((100, 100), fmt="JPEG")
    r = edit(http, finished_job["id"], image, name="edited.jpg", fps="24")

    assert r.status_code == 202
    job = r.json()
    made_by = {k: finished_job["params"][k] for k in ("model", "version")}
    assert job["params"] == made_by | {
        "fps": 24,
        "resized": True,
        "source_size": [100, 100],
        "shot": None,
        "carry": False,
    }
    assert server.blobs.get(server.jobs.get(job["id"]).inputs["image"]) == image
    assert server.jobs.get(job["id"]).inputs["image"].endswith("/input/image.jpg")


def test_an_image_of_another_shape_is_refused_naming_the_canonical_images(
    http: httpx.Client, redis_db: redis.Redis, finished_job: dict
):
    r = edit(http, finished_job["id"], png_bytes((100, 80)))

    assert r.status_code == 422
    assert "image is 100x80, but the canonical image is 64x64" in r.text
    assert redis_db.llen("gendef-edit") == 0


def test_an_edit_can_be_edited_and_resampled(http: httpx.Client, server: Server, finished_job: dict):
    first = edit(http, finished_job["id"], png_bytes(seed=1)).json()["id"]
    server.finish(first)

    assert edit(http, first, png_bytes(seed=2)).status_code == 202
    r = http.post("/generate", json={"canonical_from": first, "motion_seed": 5})
    assert r.status_code == 202
    # The new motion is sampled for the content seed of the generate job the edit started from.
    assert r.json()["params"]["seed"] == finished_job["params"]["seed"]


def test_edit_of_an_unknown_job_is_404(http: httpx.Client, redis_db: redis.Redis):
    r = edit(http, "0" * 32, png_bytes())
    assert r.status_code == 404
    assert r.json()["detail"] == f"job_id: job {'0' * 32} does not exist (or its record has expired)"
    assert redis_db.llen("gendef-edit") == 0


def test_edit_of_an_unfinished_job_is_409(http: httpx.Client):
    queued = http.post("/generate", json={}).json()["id"]
    r = edit(http, queued, png_bytes())
    assert r.status_code == 409
    assert f"job_id: job {queued} is queued, not succeeded" in r.json()["detail"]


@pytest.mark.parametrize("fields, missing", [({"fps": "0"}, "fps"), ({"fps": "fast"}, "fps")])
def test_edit_with_invalid_fields_is_422(http: httpx.Client, finished_job: dict, fields, missing):
    r = edit(http, finished_job["id"], png_bytes(), **fields)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", missing]


def test_edit_without_an_image_is_422(http: httpx.Client, finished_job: dict):
    r = http.post("/edit", data={"job_id": finished_job["id"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "image"]


def cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "image, status, message",
    [
        (b"GIF89a" + b"\0" * 100, 415, "image must be a PNG or JPEG file"),
        (b"%PDF-1.7 not an image", 415, "image must be a PNG or JPEG file"),
        (b"", 415, "image must be a PNG or JPEG file"),
        (cut(png_bytes()), 422, "truncated or corrupt"),
        (cut(png_bytes(fmt="JPEG")), 422, "truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 422, "cannot read the PNG header"),
        (png_header_only(1000, 1000), 413, "image is 1000x1000 = 1000000 pixels; the limit is 262144"),
        (png_header_only(100_000, 100_000), 413, "image has too many pixels: the limit is 262144"),
    ],
)
def test_bad_uploads_are_refused_with_a_message_and_nothing_is_queued(
    http: httpx.Client, server: Server, finished_job: dict, redis_db: redis.Redis, image, status, message
):
    r = edit(http, finished_job["id"], image)

    assert r.status_code == status
    assert message in r.json()["detail"]
    assert redis_db.llen("gendef-edit") == 0
    assert {k for k in redis_db.scan_iter("gendef:job:*")} == {f"gendef:job:{finished_job['id']}"}


def test_an_oversized_body_is_413_from_its_content_length(
    http: httpx.Client, finished_job: dict, redis_db: redis.Redis
):
    r = edit(http, finished_job["id"], b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_BYTES + 128 * 1024))
    assert r.status_code == 413
    assert "larger than the limit" in r.json()["detail"]
    assert redis_db.llen("gendef-edit") == 0


def test_an_oversized_streamed_body_is_413(server: Server, finished_job: dict, redis_db: redis.Redis):
    """Without a Content-Length (chunked), the body is cut off once it passes the limit."""
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="job_id"\r\n\r\n{finished_job["id"]}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head + b"\x89PNG\r\n\x1a\n"
        for _ in range(40):  # 40 x 16 KiB: past the 256 KiB + 64 KiB limit
            yield b"\0" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post(
            "/edit", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
    assert r.status_code == 413
    assert redis_db.llen("gendef-edit") == 0


def test_an_image_just_over_the_cap_inside_a_body_under_the_limit_is_413(
    http: httpx.Client, finished_job: dict
):
    r = edit(http, finished_job["id"], b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_UPLOAD_BYTES)
    assert r.status_code == 413
    assert r.json()["detail"] == f"image is larger than the limit of {MAX_UPLOAD_BYTES} bytes"


def test_the_service_still_works_after_bad_uploads(http: httpx.Client, finished_job: dict):
    for image in (b"junk", cut(png_bytes()), png_header_only(100_000, 100_000)):
        assert edit(http, finished_job["id"], image).status_code in (413, 415, 422)
    assert edit(http, finished_job["id"], png_bytes()).status_code == 202
    assert http.post("/generate", json={}).status_code == 202
