"""Webhooks through the production-mode deployment: the worker delivers to a receiver on a loopback port here,
signed with the deployment's GENDEF_WEBHOOK_SECRET, and retries after a 500."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import WEBHOOK_SECRET
from tests.e2e.test_jobs import png, submit, succeeded

DELIVERY_TIMEOUT_S = 120


class Receiver:
    """An HTTP server on a free loopback port that records every POST; it answers 500 to the first
    `fail_first` requests of each delivery id, 200 after."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[tuple[dict[str, str], bytes, int]] = []  # (headers, body, status answered)
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    tries = sum(
                        h["x-gendef-delivery"] == headers["x-gendef-delivery"]
                        for h, _, _ in receiver.requests
                    )
                    status = 500 if tries < receiver.fail_first else 200
                    receiver.requests.append((headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int) -> list[tuple[dict[str, str], bytes, int]]:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} webhook requests arrived"
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.server.shutdown()


def signed(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-gendef-signature"], expected)


def test_start_and_completed_are_delivered_signed_and_retried_after_a_500(
    http: httpx.Client, receiver: Receiver
):
    job = submit(
        http,
        "/generate",
        json={
            "seed": 7,
            "motion_seed": 8,
            "num_frames": 8,
            "webhook": receiver.url,
            "webhook_events": ["start", "completed"],
        },
    )
    done, _ = succeeded(http, job["id"])
    requests = receiver.wait_for(4)  # each event: a 500, then the retry
    time.sleep(1)  # nothing more arrives after the two successful deliveries
    assert len(receiver.requests) == 4

    deliveries = {}
    for headers, body, status in requests:
        assert headers["content-type"] == "application/json"
        assert signed(headers, body), "the signature does not match the body"
        payload = json.loads(body)
        assert payload["event"] == headers["x-gendef-event"]
        assert headers["x-gendef-delivery"] == f"{job['id']}.{payload['event']}"
        deliveries.setdefault(payload["event"], []).append((status, payload["job"]))
    assert [s for s, _ in deliveries["start"]] == [500, 200] and [s for s, _ in deliveries["completed"]] == [
        500,
        200,
    ]
    assert all(doc["status"] == "running" for _, doc in deliveries["start"])
    completed = deliveries["completed"][-1][1]
    assert completed["status"] == "succeeded" and completed["id"] == job["id"]
    assert completed["finished_at"] == done["finished_at"]
    video = httpx.get(completed["artifacts"]["video"]["url"], timeout=30)  # the URLs in the payload work
    assert video.status_code == 200 and len(video.content) == done["artifacts"]["video"]["bytes"]


def test_an_edit_sends_completed_only_by_default(http: httpx.Client, receiver: Receiver):
    receiver.fail_first = 0
    source = submit(http, "/generate", json={"seed": 9, "motion_seed": 1, "num_frames": 4})
    succeeded(http, source["id"])
    edit = submit(
        http,
        "/edit",
        data={"job_id": source["id"], "webhook": receiver.url},
        files={"image": ("e.png", png(np.full((32, 32, 3), 200, np.uint8)))},
    )
    succeeded(http, edit["id"])
    ((headers, body, status),) = receiver.wait_for(1)
    assert signed(headers, body) and status == 200
    assert json.loads(body)["event"] == "completed" and json.loads(body)["job"]["kind"] == "edit"


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook", "URL scheme should be 'http' or 'https'"),
        ({"webhook": "not a url"}, "webhook", "Input should be a valid URL"),
        ({"webhook_events": ["completed"]}, "webhook_events", "needs a webhook URL"),
        (
            {"webhook": "http://example.com/h", "webhook_events": ["done"]},
            "webhook_events",
            "'start' or 'completed'",
        ),
    ],
)
def test_bad_webhook_fields_are_422_naming_the_field(
    http: httpx.Client, fields: dict, field: str, message: str
):
    response = http.post("/generate", json={"seed": 1} | fields)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(field in e["loc"] and message in e["msg"] for e in errors), errors
