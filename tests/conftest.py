"""Fixtures shared by the test packages."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import torch
from torch import nn

from model.checkpoint import save_checkpoint
from model.config import preset
from model.gendef import GenDeF
from tests.redis_server import free_port, stop_session_redis


def randomise_fields(model: GenDeF, std: float, bias_std: float) -> None:
    """Replace the zero-initialised skip layers of the deformation generator by random weights, so that the fields
    move (an untrained model's fields are exactly the identity)."""
    for skip in model.deformation.to_offset:
        nn.init.normal_(skip.conv.weight, std=std)
        nn.init.normal_(skip.bias, std=bias_std / len(model.deformation.to_offset) ** 0.5)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` checkpoint (32x32) whose fields move (randomise_fields)."""
    torch.manual_seed(0)
    model = GenDeF(preset("tiny"))
    randomise_fields(model, std=0.3, bias_std=0.05)
    return save_checkpoint(
        model, tmp_path_factory.mktemp("checkpoint") / "tiny", card={"status": "test weights"}
    )


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conditional `tiny` checkpoint (32x32) named `digits`: 10 classes, 2 labels a video, its label embedding
    random (as if trained: the labels change the image) and its fields moving."""
    torch.manual_seed(0)
    config = preset("tiny")
    config.canonical.classes, config.canonical.labels_per_image = 10, 2
    model = GenDeF(config)
    randomise_fields(model, std=0.3, bias_std=0.05)
    nn.init.normal_(model.canonical.mapping.embed.weight)
    return save_checkpoint(
        model, tmp_path_factory.mktemp("checkpoint") / "digits", card={"data": "nothing: random test weights"}
    )


@pytest.fixture(scope="session", autouse=True)
def session_redis() -> Iterator[None]:
    """Stops the session's redis-server (tests/redis_server.py) after every other fixture has ended."""
    yield
    stop_session_redis()


def require_tool(present: bool, message: str) -> None:
    """A tool from outside Python that some tests need (``message`` names its Debian package): skip without it,
    but fail under CI=true, where a skip would hide that the tests did not run."""
    if not present:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: not skipped)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a subprocess on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    name = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name
