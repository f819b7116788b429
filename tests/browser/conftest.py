"""The browser tests run against the e2e deployment (tests/e2e/conftest.py), driven by Playwright through Debian's
chromium (`apt-get install chromium chromium-driver`; never `playwright install`). Screenshots go to
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import require_tool

# The e2e deployment's fixtures (a second deployment when tests/e2e runs in the same session: fixtures are per
# conftest).
from tests.e2e.conftest import api_url, deployment_env, e2e_logs, models_dir, queues, s3_endpoint  # noqa: F401

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
