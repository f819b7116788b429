"""A deformation generator that predicts where canonical points go (deformation.forward): its field is the inverse
of that map, so an object moves by what its own features say; the contract (frame = warp of the canonical image
by the field) holds as for a generator that predicts the field."""

import json

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import preset
from model.deformation import invert_displacement
from model.gendef import GenDeF
from model.warp import identity_grid, warp
from tests.conftest import randomise_fields

PX = 2 / 32  # a pixel of the 32 px grid, in field units


def test_a_constant_displacement_inverts_to_minus_itself():
    d = torch.zeros(1, 2, 16, 16)
    d[:, 0], d[:, 1] = 3 * PX, -2 * PX  # every point moves 3 px right, 2 up
    offsets = invert_displacement(d, 32, steps=4)  # (1, 2, 32, 32)
    assert torch.allclose(offsets[:, 0], torch.full((1, 32, 32), -3 * PX), atol=1e-6)
    assert torch.allclose(offsets[:, 1], torch.full((1, 32, 32), 2 * PX), atol=1e-6)


def test_two_halves_moving_apart_each_keep_their_own_motion():
    """The left third moves 3 px left, the right third 3 px right, the middle stretches between them: every frame
    pixel reads the canonical point that moved onto it (c + d(c) = p), and each side's content is where its own
    displacement put it."""
    x = identity_grid(16, 16)[..., 0]  # (16, 16) in [-1, 1]
    dx = (x * 3).clamp(-1, 1) * 3 * PX  # -3 px left of x = -1/3, +3 px right of 1/3, a ramp between
    d = torch.stack([dx, torch.zeros_like(dx)])[None]  # (1, 2, 16, 16)
    offsets = invert_displacement(d, 32, steps=12)
    c = identity_grid(32, 32)[None] + offsets.permute(0, 2, 3, 1)  # (1, 32, 32, 2): the canonical points read
    moved = torch.nn.functional.grid_sample(d, c, padding_mode="border", align_corners=False)  # d(c)
    residual = (c + moved.permute(0, 2, 3, 1) - identity_grid(32, 32)) / PX  # pixels
    assert residual.abs().max() < 0.05
    assert offsets[0, 0, 16, 2] == pytest.approx(3 * PX, abs=1e-5)  # far left: reads 3 px to its right
    assert offsets[0, 0, 16, 29] == pytest.approx(-3 * PX, abs=1e-5)  # far right: reads 3 px to its left


def forward_tiny() -> GenDeF:
    cfg = preset("tiny")
    cfg.deformation.forward = True
    torch.manual_seed(0)
    return GenDeF(cfg)


def test_a_forward_map_starts_at_the_identity_and_its_frames_are_the_warped_canonical_image():
    model = forward_tiny().eval()
    out = model.sample([0, 1], [0, 1], 4)
    torch.testing.assert_close(out.fields, identity_grid(32, 32).expand_as(out.fields))
    randomise_fields(model, std=0.3, bias_std=0.05)
    out = model.sample([0, 1], [0, 1], 4)
    assert (out.fields[:, 1:] - out.fields[:, :1]).abs().max() > 1e-3  # it moves
    torch.testing.assert_close(out.frames, warp(out.canonical, out.fields).clamp(-1, 1))


def test_a_checkpoint_saved_before_the_option_loads_as_a_field_predictor(tmp_path):
    torch.manual_seed(0)
    model = GenDeF(preset("tiny"))
    randomise_fields(model, std=0.3, bias_std=0.05)
    path = save_checkpoint(model, tmp_path / "old", card={"status": "test"})
    config = json.loads((path / "config.json").read_text())
    for key in ("forward", "invert_steps"):
        del config["deformation"][key]  # as written before the option existed
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(path)
    assert loaded.config.deformation.forward is False
    torch.testing.assert_close(loaded.sample([3], [4], 3).fields, model.eval().sample([3], [4], 3).fields)


def layered_tiny(layers: int = 2) -> GenDeF:
    cfg = preset("tiny")
    cfg.deformation.forward, cfg.deformation.layers = True, layers
    torch.manual_seed(0)
    return GenDeF(cfg).eval()


def test_motion_layers_start_still_and_add_their_own_trajectories_to_the_motion_seed():
    plain, layered = forward_tiny().eval(), layered_tiny()
    layered.load_state_dict(plain.state_dict(), strict=False)  # the same network but for the layers' parts
    for model in (plain, layered):
        randomise_fields(model, std=0.3, bias_std=0.05)
    layered.deformation.load_state_dict(plain.deformation.state_dict(), strict=False)
    # the layers' output starts at zero: the same fields as without them (the first trajectory is the same draw)
    torch.testing.assert_close(layered.sample([0], [5], 4).fields, plain.sample([0], [5], 4).fields)
    assert layered.motion.raw_code_shape()[0] == 3 * plain.motion.raw_code_shape()[0]


def test_each_motion_layer_moves_its_region_rigidly_by_its_own_translation():
    model = layered_tiny()
    deformation = model.deformation
    regions = torch.zeros(1, 3, 16, 16)
    regions[:, 0] = 1  # static everywhere but two squares
    regions[:, 0, 2:6, 2:6], regions[:, 1, 2:6, 2:6] = 0, 1  # layer 1: top left
    regions[:, 0, 10:14, 10:14], regions[:, 2, 10:14, 10:14] = 0, 1  # layer 2: bottom right
    codes = torch.randn(1, 2, 4, model.config.motion.code_dim, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(deformation.translation[-1].weight)
    d = deformation.layer_displacement(regions, codes)  # (T, 2, 16, 16)
    a, b = d[:, :, 3, 3], d[:, :, 12, 12]  # (T, 2): each square's translation, frame by frame
    assert torch.equal(d[:, :, 2:6, 2:6], a[..., None, None].expand(-1, -1, 4, 4))  # rigid
    assert (a - b).abs().max() > 1e-3  # each its own
    assert d[:, :, 8, 2].abs().max() == 0  # the static region does not move
