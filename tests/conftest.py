"""Fixtures shared by the test packages."""

from pathlib import Path

import pytest
import torch
from torch import nn

from model.checkpoint import save_checkpoint
from model.config import preset
from model.gendef import GenDeF


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
