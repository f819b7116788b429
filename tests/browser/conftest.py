"""The browser tests run against the e2e deployment (tests/e2e/conftest.py), driven by Playwright through Debian's
chromium (`apt-get install chromium chromium-driver`; never `playwright install`). Screenshots go to
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from service import embedded
from tests.conftest import require_tool

# The e2e deployment's fixtures (a second deployment when tests/e2e runs in the same session: fixtures are per
# conftest).
from tests.e2e.conftest import (  # noqa: F401
    api_url,
    deployment_env,
    e2e_logs,
    free_port,
    models_dir,
    queues,
    s3_endpoint,
    spawn,
    stop,
    wait_for,
)

API_KEY = "browser-test-key-0123456789abcdef"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require_tool(
        shutil.which(CHROMIUM) is not None,
        f"{CHROMIUM} is missing (Debian: apt-get install chromium chromium-driver; .ci/run does)",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def keyed_api_url(api_url: str, deployment_env: dict[str, str], e2e_logs: Path) -> Iterator[str]:  # noqa: F811
    """A second API of the e2e deployment (same Redis, queues, store and worker) with API keys on: API_KEY."""
    port = free_port()
    log = e2e_logs / "api-keyed.log"
    env = deployment_env | {"GENDEF_API_KEYS": hashlib.sha256(API_KEY.encode()).hexdigest()}
    process = spawn(embedded.api_args(port), log, env=env, cwd=e2e_logs)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", {log: process})
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
