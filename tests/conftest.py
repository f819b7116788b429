"""Fixtures shared by the test packages."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from model.checkpoint import save_checkpoint
from model.config import preset
from model.gendef import GenDeF
from tests.redis_server import stop_session_redis


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` checkpoint (32x32) whose fields move: an untrained model's last deformation layer is zero, which
    makes every field the identity, so it is replaced by random weights."""
    torch.manual_seed(0)
    model = GenDeF(preset("tiny"))
    nn.init.normal_(model.deformation.out.weight, std=0.3)
    nn.init.normal_(model.deformation.out.bias, std=0.05)
    return save_checkpoint(
        model, tmp_path_factory.mktemp("checkpoint") / "tiny", card={"status": "test weights"}
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
