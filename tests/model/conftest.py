import pytest
import torch

from model.config import preset
from model.gendef import GenDeF
from tests.conftest import randomise_fields


def make_tiny(weights_seed: int = 0, moving: bool = True) -> GenDeF:
    """A tiny model; moving=True gives it random moving fields (randomise_fields)."""
    torch.manual_seed(weights_seed)
    model = GenDeF(preset("tiny"))
    if moving:
        randomise_fields(model, std=0.3, bias_std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> GenDeF:
    return make_tiny()
