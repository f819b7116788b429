"""Inference settings (model/inference.py): bf16 autocast stays within the documented tolerance of float32 and is
deterministic on its own; channels_last keeps float32 results; outputs stay float32."""

import pytest
import torch

from model.inference import TOLERANCE, prepare, resolve_precision

from .conftest import make_tiny

SEEDS, MOTION_SEEDS, FRAMES = [1, 7], [2, 9], 24


@pytest.fixture(scope="module")
def reference():
    return make_tiny().sample(SEEDS, MOTION_SEEDS, FRAMES)


def test_bf16_autocast_stays_within_the_documented_tolerance_of_float32(reference):
    model = prepare(make_tiny(), precision="bfloat16", channels_last=False)
    out = model.sample(SEEDS, MOTION_SEEDS, FRAMES)
    assert out.canonical.dtype == out.fields.dtype == out.frames.dtype == torch.float32
    half_res = model.config.resolution / 2  # field units per pixel
    fields_px = (out.fields - reference.fields).abs() * half_res
    assert fields_px.max() > 0  # the autocast did run in bf16
    assert (out.canonical - reference.canonical).abs().max() <= TOLERANCE["canonical_max"]
    assert fields_px.max() <= TOLERANCE["fields_max_px"]
    assert fields_px.mean() <= TOLERANCE["fields_mean_px"]
    assert (out.frames - reference.frames).abs().mean() <= TOLERANCE["frames_mean"]


def test_bf16_sampling_is_deterministic_and_per_video(reference):
    model = prepare(make_tiny(), precision="bfloat16", channels_last=False)
    both = model.sample(SEEDS, MOTION_SEEDS, FRAMES)
    again = model.sample(SEEDS, MOTION_SEEDS, FRAMES)
    second = model.sample(SEEDS[1:], MOTION_SEEDS[1:], FRAMES)
    assert torch.equal(both.frames, again.frames)
    assert torch.equal(both.frames[1:], second.frames) and torch.equal(both.fields[1:], second.fields)
    assert torch.equal(model.sample_motion(SEEDS, MOTION_SEEDS, FRAMES), both.fields)


def test_channels_last_keeps_float32_results(reference):
    model = prepare(make_tiny(), precision="float32", channels_last=True)
    assert model.deformation.out.weight.is_contiguous(memory_format=torch.channels_last)
    out = model.sample(SEEDS, MOTION_SEEDS, FRAMES)
    torch.testing.assert_close(out.fields, reference.fields, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.frames, reference.frames, rtol=0, atol=1e-3)


def test_auto_precision_is_bf16_on_cuda_and_float32_on_the_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    assert prepare(make_tiny(), precision="auto").precision == torch.float32
