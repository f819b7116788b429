"""Webhook fields refused before a job is queued (the e2e tests deliver real ones)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service.helpers import Server, make_settings, png_bytes


def test_a_deployment_without_a_webhook_secret_refuses_webhooks(http: httpx.Client, redis_db):
    response = http.post("/generate", json={"seed": 1, "webhook": "https://example.com/hook"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "webhook"] and "GENDEF_WEBHOOK_SECRET" in error["msg"]
    assert redis_db.keys("gendef:job:*") == []  # nothing queued


def test_edit_form_webhook_must_be_http(http: httpx.Client, server: Server):
    source = server.finish(http.post("/generate", json={"seed": 1}).json()["id"])
    response = http.post(
        "/edit",
        data={"job_id": source.id, "webhook": "file:///etc/passwd"},
        files={"image": ("e.png", png_bytes())},
    )
    assert response.status_code == 422
    assert any(e["loc"] == ["body", "webhook"] and "http" in e["msg"] for e in response.json()["detail"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "https://[::ffff:192.168.0.1]/hook",
    ],
)
def test_a_webhook_to_an_internal_address_is_422(redis_db, tmp_path: Path, url: str):
    with Server(make_settings(tmp_path, webhook_secret="s" * 32)) as server:
        response = httpx.post(f"{server.url}/generate", json={"seed": 1, "webhook": url})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "webhook"] and "GENDEF_WEBHOOK_ALLOW" in error["msg"], error
    assert redis_db.keys("gendef:job:*") == []
