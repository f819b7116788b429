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
