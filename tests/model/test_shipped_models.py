"""Every model shipped in model/weights meets the field-health targets (docs/EVALUATION.md): its fields neither
fold nor leave the canvas (each at most 1 % of the points), they move (at least 0.3 px per frame), and frame 0 is a
warp of its own canonical image (near the identity, neither squeezed nor stretched). A Moving-MNIST model also
meets the quality targets of that dataset (the digit classifier's Fréchet distance and content kept) and moves its
two digits as real clips do (each on its own: model.evaluation.motion)."""

import functools
import itertools
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.data import MovingMNIST
from model.evaluation.digits import accuracy, load_digit_classifier
from model.evaluation.evaluate import Sample, canonical_digit_stats, digit_stats, generate, real_clips
from model.evaluation.metrics import field_health
from model.evaluation.motion import generated_digits, relative_displacement, trajectory_stats
from model.fields import jacobian_determinant

WEIGHTS = Path(__file__).resolve().parents[2] / "model" / "weights"
# models below a target yet: name -> (the checks they fail, why); strict: the test fails once one passes
BELOW_TARGETS: dict[str, tuple[set[str], str]] = {}


def _shipped(check: str, kind: str = "") -> list:
    """Shipped model names (those whose name holds kind), each marked xfail where it is below this check's target."""
    names = sorted(p.name for p in WEIGHTS.iterdir() if (p / "config.json").is_file() and kind in p.name)
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


@functools.cache
def mnist_sample(name: str) -> Sample:
    """256 videos of 16 frames: the model card's numbers are measured on these."""
    return generate(load_checkpoint(WEIGHTS / name), videos=256, frames=16, first_seed=0)


def test_a_moving_mnist_model_ships():
    assert _shipped("any", "mnist")


def test_the_moving_mnist_model_meets_its_targets():
    """At 256 videos of 16 frames against Moving-MNIST clips of the held-out digits (the model card's numbers): the
    digit classifier's Fréchet distance at most 3x the real-vs-real floor, and content kept within 0.1 of real
    clips'. Any model trained on Moving MNIST is held to them."""
    real, reference = real_clips("mnist", 64, videos=256, frames=16, seed=0)
    for name in [p.name for p in WEIGHTS.iterdir() if (p / "config.json").is_file() and "mnist" in p.name]:
        videos = mnist_sample(name).frames
        stats = digit_stats({"real (floor)": real, "model": videos}, reference)
        floor, model = stats["real (floor)"], stats["model"]
        assert model["frechet_digit_classifier"] <= 3 * floor["frechet_digit_classifier"], (name, stats)
        assert abs(model["content_kept"] - floor["content_kept"]) <= 0.1, (name, stats)


@pytest.mark.parametrize("name", _shipped("digit_motion", "mnist"))
def test_the_moving_mnist_model_moves_its_two_digits_each_on_its_own(name):
    """Each digit followed from the canonical image through the fields (model.evaluation.motion), 256 videos of
    16 frames, against 256 real clips of the held-out digits: the two digits' offset from each other changes by at
    least half as much as in real clips (13 px; real about 26), and each digit's speed and the share of videos
    where a digit bounces off a wall are within 30 % of real clips'."""
    times = torch.arange(16.0).expand(256, -1)
    real = trajectory_stats(
        MovingMNIST(64, "heldout").draw_tracked(times, torch.Generator().manual_seed(0))[2]
    )
    sample = mnist_sample(name)
    model = trajectory_stats(generated_digits(sample.canonical, sample.fields))
    assert model["relative_displacement_px"]["mean"] >= 13, (model, real)
    for key in ("speed_px_per_frame", "bounce_share"):
        value, target = model[key], real[key]
        if isinstance(value, dict):
            value, target = value["mean"], target["mean"]
        assert abs(value - target) <= 0.3 * target, (key, model, real)


@pytest.mark.parametrize("name", _shipped("resample_motion", "mnist"))
def test_resampling_the_motion_moves_the_digits_another_way(name):
    """For one content seed, 8 motion seeds: how far the two digits move relative to each other differs from one
    motion to another (standard deviation at least 5 px; real clips: 14), in the mean over 4 content seeds."""
    model, spreads = load_checkpoint(WEIGHTS / name), []
    for seed in range(4):
        out = model.sample([seed] * 8, list(range(100, 108)), 16)
        relative = relative_displacement(generated_digits(out.canonical, out.fields))  # (8,)
        spreads.append(float(relative[~relative.isnan()].std()))  # videos that lost a digit left out
    assert sum(spreads) / len(spreads) >= 5, spreads


@pytest.mark.parametrize("name", _shipped("asked_labels", "mnist"))
def test_the_moving_mnist_model_draws_the_digits_asked_for(name):
    """POST /generate's labels: for 270 content seeds, each of the 45 pairs of digits asked for 6 times, the digit
    classifier reads the two digits asked in the canonical image at least as often as it reads the seed-drawn ones
    in the canonical images of the same seeds (evaluate's labels_read), within two standard errors of the
    difference of the two shares."""
    model = load_checkpoint(WEIGHTS / name)
    seeds = list(range(270))
    pairs = list(itertools.combinations(range(10), 2))
    asked = [list(pairs[i % len(pairs)]) for i in seeds]
    canonical = torch.cat(
        [
            model.sample(seeds[i : i + 45], seeds[i : i + 45], 1, labels=asked[i : i + 45]).canonical
            for i in seeds[::45]
        ]
    )  # (270, 3, 64, 64)
    read = accuracy(load_digit_classifier(), canonical, torch.tensor(asked))
    drawn = canonical_digit_stats(model, len(seeds), seed=0)[0]["labels_read"]
    error = ((read * (1 - read) + drawn * (1 - drawn)) / len(seeds)) ** 0.5
    assert read >= drawn - 2 * error, (read, drawn)
    assert read > 0.5, read  # chance is 1 in 45
