import pytest
import torch
from torch import nn

from model.config import preset
from model.gendef import GenDeF


def make_tiny(weights_seed: int = 0, moving: bool = True) -> GenDeF:
    """A tiny model; moving=True replaces the zero-initialised last layer of the deformation generator by random
    weights, so that the fields move (an untrained model's fields are exactly the identity)."""
    torch.manual_seed(weights_seed)
    model = GenDeF(preset("tiny"))
    if moving:
        nn.init.normal_(model.deformation.out.weight, std=0.3)
        nn.init.normal_(model.deformation.out.bias, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> GenDeF:
    return make_tiny()
