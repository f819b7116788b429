"""Every model shipped in model/weights meets the field-health targets (docs/EVALUATION.md): its fields neither
fold nor leave the canvas (each at most 1 % of the points), they move (at least 0.3 px per frame), and frame 0 is a
warp of its own canonical image (near the identity, neither squeezed nor stretched). A Moving-MNIST model also
meets the quality targets of that dataset (the digit classifier's Fréchet distance and content kept)."""

import functools
from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint
from model.evaluation.evaluate import Sample, digit_stats, generate, real_clips
from model.evaluation.metrics import field_health
from model.fields import jacobian_determinant

WEIGHTS = Path(__file__).resolve().parents[2] / "model" / "weights"
# models below a target yet: name -> (the checks they fail, why); strict: the test fails once one passes
BELOW_TARGETS: dict[str, tuple[set[str], str]] = {}


def _shipped(check: str) -> list:
    names = sorted(p.name for p in WEIGHTS.iterdir() if (p / "config.json").is_file())
    below = {n: why for n, (checks, why) in BELOW_TARGETS.items() if check in checks}
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=below[n], strict=True)) if n in below else n
        for n in names
    ]


@functools.cache
def sample_of(name: str) -> Sample:
    return generate(load_checkpoint(WEIGHTS / name), videos=16, frames=16, first_seed=0)


@pytest.mark.parametrize("name", _shipped("folds"))
def test_fields_neither_fold_nor_leave_the_canvas(name):
    health = field_health(sample_of(name).fields)
    assert health["folds"] <= 0.01 and health["off_canvas"] <= 0.01, health


@pytest.mark.parametrize("name", _shipped("motion"))
def test_fields_move(name):
    health = field_health(sample_of(name).fields)
    assert health["motion"] >= 0.3, health


@pytest.mark.parametrize("name", _shipped("warp"))
def test_frame0_is_a_warp_of_its_own_canonical_image(name):
    """Near the identity (mean offset at most a tenth of the width) and locally neither squeezed nor stretched
    (area scale within [0.5, 2] at 95 % of the points): the first model's frame 0 was 20 px off and squeezed."""
    fields = sample_of(name).fields[:, :1]  # (B, 1, H, W, 2)
    area = jacobian_determinant(fields)
    assert field_health(sample_of(name).fields)["frame0_offset"] <= 0.1 * fields.shape[-2]
    assert ((area > 0.5) & (area < 2)).float().mean() >= 0.95


def test_every_shipped_model_is_checked():
    assert set(BELOW_TARGETS) <= {p.name for p in WEIGHTS.iterdir()}  # no stale exemption


def test_the_moving_mnist_model_meets_its_targets():
    """At 256 videos of 16 frames against Moving-MNIST clips of the held-out digits (the model card's numbers): the
    digit classifier's Fréchet distance at most 3x the real-vs-real floor, and content kept within 0.1 of real
    clips'. Any model trained on Moving MNIST is held to them."""
    names = [p.name for p in WEIGHTS.iterdir() if (p / "config.json").is_file() and "mnist" in p.name]
    assert names, "a Moving-MNIST model ships"
    real, reference = real_clips("mnist", 64, videos=256, frames=16, seed=0)
    for name in names:
        videos = generate(load_checkpoint(WEIGHTS / name), videos=256, frames=16, first_seed=0).frames
        stats = digit_stats({"real (floor)": real, "model": videos}, reference)
        floor, model = stats["real (floor)"], stats["model"]
        assert model["frechet_digit_classifier"] <= 3 * floor["frechet_digit_classifier"], (name, stats)
        assert abs(model["content_kept"] - floor["content_kept"]) <= 0.1, (name, stats)
